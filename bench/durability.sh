#!/usr/bin/env bash
# Durability benchmarks, side by side with Redis 7 in one run:
#  1. durable STORE throughput: jnhpd `fsync = "always"` (group commit)
#     vs Redis `appendonly yes` + `appendfsync always` (SETNX), at 1, 10 and
#     50 connections, each storing unique names one at a time;
#  2. replay: start-up time of jnhpd on a data file of 1M records;
#  3. memory: resident size holding 1M names (16-byte names, 32-byte
#     values), jnhpd vs Redis.
# Servers on core 0, load on core 1; data under target/ (a real disk).
#
#   bench/durability.sh [SECONDS] [REPEATS]    # default 3 s per run, median of 3
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
repeats=${2:-3}
root=$PWD

if ! command -v redis-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
cargo build --release --quiet --bin jnhpd --example store_bench
jnhpd="$root/target/release/jnhpd"
load="$root/target/release/examples/store_bench"

work="$root/target/bench-durability"
rm -rf "$work" && mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}
# wait_log FILE: until jnhpd logged that it serves (the port accepts
# connections earlier, while the data file is still being replayed).
wait_log() {
  for _ in $(seq 600); do
    grep -q "listening on" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "jnhpd did not start; $1:" >&2; cat "$1" >&2; exit 1
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

jnhpd_config() { # jnhpd_config DIR PORT FSYNC
  mkdir -p "$1"
  printf '[server]\nlisten = ["127.0.0.1:%d"]\n[storage]\npath = "data"\nfsync = "%s"\n[log]\nlevel = "info"\n' \
    "$2" "$3" >"$1/jnhp.toml"
  echo "$1/jnhp.toml"
}

# --- 1. durable throughput ------------------------------------------------
jport=18301; rport=18302
taskset -c 0 "$jnhpd" --config "$(jnhpd_config "$work/jnhpd" $jport always)" 2>"$work/jnhpd.log" &
jpid=$!; pids+=("$jpid")
mkdir -p "$work/redis"
taskset -c 0 redis-server --port $rport --dir "$work/redis" --appendonly yes --appendfsync always \
  --save '' --daemonize no --logfile "$work/redis.log" &
rpid=$!; pids+=("$rpid")
wait_log "$work/jnhpd.log"; wait_port $rport
for r in $(seq "$repeats"); do
  echo "durable throughput: round $r of $repeats" >&2
  for conc in 1 10 50; do
    taskset -c 1 "$load" --concurrency $conc --seconds "$secs" stores 127.0.0.1:$jport >>"$work/j$conc"
    taskset -c 1 "$load" --concurrency $conc --seconds "$secs" --resp stores 127.0.0.1:$rport >>"$work/r$conc"
  done
done
stop "$jpid"; stop "$rpid"

# --- 2 and 3. replay and memory --------------------------------------------
echo "filling 1M names" >&2
taskset -c 0 "$jnhpd" --config "$(jnhpd_config "$work/million" $jport never)" 2>"$work/million.log" &
jpid=$!; pids+=("$jpid"); wait_log "$work/million.log"
taskset -c 1 "$load" fill 127.0.0.1:$jport --count 1000000 >/dev/null
jnhpd_rss_filled=$(rss_kib "$jpid")
stop "$jpid"
taskset -c 0 "$jnhpd" --config "$work/million/jnhp.toml" 2>"$work/replay.log" &
jpid=$!; pids+=("$jpid"); wait_log "$work/replay.log"
replay_ms=$(grep -o 'replayed 1000000 records (1000000 names) in [0-9]* ms' "$work/replay.log" | grep -o '[0-9]* ms')
jnhpd_rss_replayed=$(rss_kib "$jpid")
stop "$jpid"
data_mb=$(( $(stat -c %s "$work/million/data") / 1000000 ))

mkdir -p "$work/redis-mem"
taskset -c 0 redis-server --port $rport --dir "$work/redis-mem" --appendonly no --save '' \
  --daemonize no --logfile "$work/redis-mem.log" &
rpid=$!; pids+=("$rpid"); wait_port $rport
taskset -c 1 "$load" --resp fill 127.0.0.1:$rport --count 1000000 >/dev/null
redis_rss=$(rss_kib "$rpid")
stop "$rpid"

ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$1" "$2"; }
echo
echo "Durable STOREs/s (fsync on every acknowledged STORE), unique names, median of $repeats runs of ${secs} s"
echo "($(nproc) cores: server on core 0, load on core 1; $(redis-server --version | grep -o 'v=[0-9.]*'))"
echo
# Each jnhpd run sits beside a Redis run of the same round (the disk's
# speed drifts from minute to minute): the ratio column is the median of
# the rounds' ratios, each round's listed after it.
echo "| connections | jnhpd fsync = always | Redis appendfsync always | ratio (median of rounds) | each round |"
echo "|---|---|---|---|---|"
for conc in 1 10 50; do
  j=$(med <"$work/j$conc"); r=$(med <"$work/r$conc")
  rounds=$(paste -d' ' "$work/j$conc" "$work/r$conc" | awk '{printf "%.2f\n", $1 / $2}')
  echo "| $conc | $j | $r | $(med <<<"$rounds")x | $(tr "\n" " " <<<"$rounds")|"
done
echo
echo "| 1M names (16-byte names, 32-byte values) | jnhpd | Redis | ratio |"
echo "|---|---|---|---|"
echo "| resident memory after filling over the network | $((jnhpd_rss_filled / 1024)) MiB | $((redis_rss / 1024)) MiB | $(ratio "$jnhpd_rss_filled" "$redis_rss") |"
echo "| resident memory after replaying the data file | $((jnhpd_rss_replayed / 1024)) MiB | | $(ratio "$jnhpd_rss_replayed" "$redis_rss") |"
echo "| replay of the ${data_mb} MB data file | $replay_ms | | |"
