#!/usr/bin/env bash
# The PostgreSQL backend against PostgreSQL itself, side by side in one run
# on one PostgreSQL server (default durability: fsync on, synchronous
# commit), 50 connections, pipeline 1:
#  1. durable STOREs of unique names through one front-end, vs pgbench
#     running the same INSERT … ON CONFLICT DO NOTHING with 50 clients;
#  2. uncached GETs (cache_bytes = 0) vs pgbench selecting by primary key;
#  3. cached GETs vs the local (memory) backend's;
#  4. what a second front-end adds: two front-ends, two load generators;
#  5. with a synchronous standby (a second server, streaming): durable
#     STOREs and uncached GETs again vs pgbench, and pgbench's lookup alone
#     vs the same lookup carrying jnhpd's durability barrier
#     (docs/postgres.md, "What a failover can lose"): what proving that a
#     row read survives a failover costs.
# Nothing is pinned: PostgreSQL, jnhpd and the load share both cores, as
# they would on one small box. Data under target/ (a real disk).
#
#   bench/postgres.sh [SECONDS]        # default 10 s per run
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
root=$PWD

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$pgbin" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
cargo build --release --quiet -p jnhpd -p jnhp
jnhpd="$root/target/release/jnhpd"
jnhp="$root/target/release/jnhp"

work="$root/target/bench-postgres"
rm -rf "$work" && mkdir -p "$work/pg"
chown postgres "$work/pg"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

pgport=18411
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w \
  -o "-p $pgport -k $work/pg -c listen_addresses='' -c max_connections=200 -c shared_buffers=256MB" \
  start >/dev/null
psql() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work/pg" -p $pgport -U postgres "$@"; }
psql -c "CREATE DATABASE bench"
psql -c "CREATE DATABASE local_cmp"
# pgbench's table: the same layout as jnhp_names.
psql -d bench -c "CREATE TABLE pgb_names (name bytea PRIMARY KEY, value bytea NOT NULL,
  stored_by text NOT NULL, write_id bigint NOT NULL, stored_at timestamptz NOT NULL DEFAULT now())"
psql -d bench -c "INSERT INTO pgb_names (name, value, stored_by, write_id)
  SELECT convert_to('k' || i, 'UTF8'), convert_to(repeat('v', 32), 'UTF8'), 'seed', i
  FROM generate_series(1, 100000) i"
value_hex=$(printf 'v%.0s' $(seq 32) | od -An -v -tx1 | tr -d ' \n')
cat >"$work/insert.sql" <<SQL
\set n random(1, 4000000000000000000)
INSERT INTO pgb_names (name, value, stored_by, write_id)
  VALUES (int8send(:client_id) || int8send(:n), '\x$value_hex'::bytea, 'pgbench', :n)
  ON CONFLICT DO NOTHING;
SQL
cat >"$work/select.sql" <<'SQL'
\set k random(1, 100000)
SELECT value FROM pgb_names WHERE name = convert_to('k' || :k, 'UTF8');
SQL

front_end() { # front_end NAME PORT CACHE_BYTES [PREFIX]: starts one; its pid in $pid
  mkdir -p "$work/$1"
  cat >"$work/$1/jnhp.toml" <<TOML
[server]
listen = ["127.0.0.1:$2"]
[storage]
backend = "postgres"
[storage.postgres]
url = "host=$work/pg port=$pgport user=postgres dbname=bench"
table_prefix = "${4:-$1}"
cache_bytes = $3
[log]
level = "warn"
TOML
  "$jnhpd" --config "$work/$1/jnhp.toml" 2>"$work/$1.log" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start:" >&2; cat "$work/$1.log" >&2; exit 1
}
# CPU ticks used so far by all PostgreSQL processes / by one process.
pg_ticks() { local s=0 p; for p in $(pgrep -u postgres -x postgres); do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy ticks of the whole machine (every core, every process).
box_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
hz=$(getconf CLK_TCK)
us_per() { python3 -c "print(f'{$1 / $hz / $2 * 1e6:.1f}')"; } # us_per TICKS REQUESTS

bench() { # bench PORT ARGS...: requests per second; sets $requests
  local port=$1; shift
  "$jnhp" bench --addr "127.0.0.1:$port" --connections 50 --pipeline 1 \
    --seconds "$secs" --json --quiet "$@" >"$work/last.json"
  python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["ops_per_sec"]))' "$work/last.json"
}
requests() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$work/last.json"; }
# measured PORT PID ARGS...: "ops/s pg-µs/req jnhpd-µs/req" of one bench run
measured() {
  local port=$1 server=$2; shift 2
  "$jnhp" bench --addr "127.0.0.1:$port" --connections 50 --seconds 1 --quiet "$@" >/dev/null
  local p0 j0 b0 ops
  p0=$(pg_ticks); j0=$(ticks "$server"); b0=$(box_ticks)
  ops=$(bench "$port" "$@")
  echo "$ops $(us_per $(( $(pg_ticks) - p0 )) "$(requests)") $(us_per $(( $(ticks "$server") - j0 )) "$(requests)") $(us_per $(( $(box_ticks) - b0 )) "$(requests)")"
}
pgbench_measured() { # pgbench_measured SCRIPT: "tps box-µs/tx"
  local b0 out
  b0=$(box_ticks)
  out=$("$pgbin/pgbench" -n -h "$work/pg" -p $pgport -U postgres -c 50 -j 2 -T "$secs" -M prepared \
    -f "$1" bench 2>&1)
  local tps tx
  tps=$(awk '/^tps/ {print int($3)}' <<<"$out")
  tx=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out")
  echo "$tps $(us_per $(( $(box_ticks) - b0 )) "$tx")"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

# 1. durable STOREs
front_end store 18421 0
read -r jnhpd_stores store_pg store_j store_box <<<"$(measured 18421 "$pid" --unique-stores)"
read -r pgbench_inserts insert_pg <<<"$(pgbench_measured "$work/insert.sql")"

# 2. uncached GETs (the bench prefills its 100k names first)
front_end uncached 18422 0
read -r jnhpd_uncached get_pg get_j get_box <<<"$(measured 18422 "$pid" --mix 0:0:100 --keys 100000)"
read -r pgbench_selects select_pg <<<"$(pgbench_measured "$work/select.sql")"

# 3. cached GETs vs the local backend
front_end cached 18423 268435456
jnhpd_cached=$(bench 18423 --mix 0:0:100 --keys 100000)
printf '[server]\nlisten = ["127.0.0.1:18424"]\n[log]\nlevel = "warn"\n' >"$work/local.toml"
"$jnhpd" --config "$work/local.toml" 2>"$work/local.log" &
pids+=("$!")
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/18424) 2>/dev/null && break; sleep 0.1; done
local_gets=$(bench 18424 --mix 0:0:100 --keys 100000)

# 4. a second front-end on the same tables as the first (50 connections each)
front_end second 18425 0 store
bench 18421 --unique-stores >"$work/two-a" &
a=$!
bench 18425 --unique-stores >"$work/two-b"
wait $a
two_front_ends=$(( $(cat "$work/two-a") + $(cat "$work/two-b") ))

# 5. a synchronous standby
install -d -o postgres -m 700 "$work/standby"
runuser -u postgres -- "$pgbin/pg_basebackup" -D "$work/standby" -R -X stream \
  -d "host=$work/pg port=$pgport user=postgres application_name=s1"
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/standby" -l "$work/standby/server.log" -w \
  -o "-p $((pgport + 1)) -k $work/standby -c listen_addresses='' -c max_connections=200 -c shared_buffers=256MB" \
  start >/dev/null
cleanup_standby() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/standby" -m fast -w stop >/dev/null 2>&1 || true; cleanup; }
trap cleanup_standby EXIT
psql -c "ALTER SYSTEM SET synchronous_standby_names = 's1'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 300); do
  [ "$(psql -At -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break
  sleep 0.1
done
cat >"$work/select-barrier.sql" <<'SQL'
\set k random(1, 100000)
SELECT name, value, (SELECT pg_logical_emit_message(true, 'pgb_barrier', '')
    WHERE current_setting('synchronous_standby_names') <> '') IS NOT NULL AS barrier
  FROM pgb_names WHERE name = ANY(ARRAY[convert_to('k' || :k, 'UTF8')]);
SQL
front_end sync_store 18426 0
sync_stores=$(bench 18426 --unique-stores)
sync_inserts=$(pgbench_measured "$work/insert.sql" | cut -d' ' -f1)
front_end sync_uncached 18427 0
sync_uncached=$(bench 18427 --mix 0:0:100 --keys 100000)
sync_selects=$(pgbench_measured "$work/select.sql" | cut -d' ' -f1)
sync_barriers=$(pgbench_measured "$work/select-barrier.sql" | cut -d' ' -f1)

cat <<EOF
| workload (50 connections, pipeline 1) | jnhpd | peer | ratio |
|---|---|---|---|
| durable STOREs of new names / s | $jnhpd_stores | pgbench INSERT … ON CONFLICT: $pgbench_inserts | $(ratio "$jnhpd_stores" "$pgbench_inserts") |
| uncached GETs / s | $jnhpd_uncached | pgbench SELECT by key: $pgbench_selects | $(ratio "$jnhpd_uncached" "$pgbench_selects") |
| cached GETs / s | $jnhpd_cached | local backend: $local_gets | $(ratio "$jnhpd_cached" "$local_gets") |
| durable STOREs / s, two front-ends | $two_front_ends | one front-end: $jnhpd_stores | $(ratio "$two_front_ends" "$jnhpd_stores") |
| durable STOREs / s, synchronous standby | $sync_stores | pgbench INSERT … ON CONFLICT: $sync_inserts | $(ratio "$sync_stores" "$sync_inserts") |
| uncached GETs / s, synchronous standby (each batch proven by a barrier) | $sync_uncached | pgbench SELECT by key: $sync_selects | $(ratio "$sync_uncached" "$sync_selects") |
| pgbench lookups / s with the barrier, synchronous standby | $sync_barriers | the same without: $sync_selects | $(ratio "$sync_barriers" "$sync_selects") |

CPU per request (µs, user + system): PostgreSQL's processes and jnhpd's,
and the whole machine's (load generator included) for each side
| workload | PostgreSQL (via jnhpd) | jnhpd | machine, jnhpd side | machine, pgbench side |
|---|---|---|---|---|
| durable STOREs | $store_pg | $store_j | $store_box | $insert_pg |
| uncached GETs | $get_pg | $get_j | $get_box | $select_pg |
EOF
