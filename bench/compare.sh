#!/usr/bin/env bash
# jnhpd side by side with Redis, memcached and the Python baselines
# (bench/baselines), same workloads through `jnhp bench`:
#   mixed-p1   50 connections, pipeline 1, STORE:EXISTS:GET 10:10:80 over 10k prefilled names
#   mixed-p32  the same with pipeline 32
#   unique     50 connections, pipeline 1, every request a STORE of a new name
#   rate-p999  open loop at a fixed rate (RATE, default 10000/s), 50 connections
# Each server runs pinned to core 0, the load generator to core 1; servers
# are stopped by PID. Prints one table per workload: ops/s, p999 latency,
# server CPU seconds per million requests, and jnhpd / peer.
#
#   bench/compare.sh [SECONDS] [REPEATS]     # default 5 s per run, median of 3
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
repeats=${2:-3}
rate=${RATE:-10000}
root=$PWD
baselines="$root/bench/baselines"
python=$(command -v /usr/bin/python3 || command -v python3)

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v memcached >/dev/null || need+=(memcached)
# Twisted for the system python3: Debian's package (pip refuses to touch
# the system interpreter, PEP 668).
[ "$python" = /usr/bin/python3 ] && ! "$python" -c 'import twisted' 2>/dev/null && need+=(python3-twisted)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -f "$baselines/twisted_jnhp.py" ] && ! "$python" -c 'import twisted' 2>/dev/null; then
  "$python" -m pip install --quiet twisted
fi
cargo build --release --quiet --bin jnhpd --bin jnhp
jnhpd="$root/target/release/jnhpd"
jnhp="$root/target/release/jnhp"

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=18401

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

start() { # start NAME: the server NAME on $port, pinned to core 0
  refuse_busy_port
  case $1 in
    jnhpd) exec taskset -c 0 "$jnhpd" --listen "127.0.0.1:$port" --log-level warn ;;
    redis) exec taskset -c 0 redis-server --port "$port" --save '' --appendonly no --daemonize no --logfile /dev/null ;;
    memcached) exec taskset -c 0 memcached -l 127.0.0.1 -p "$port" -U 0 -m 1024 -u root ;;
    twisted) exec taskset -c 0 "$python" "$baselines/twisted_jnhp.py" --port "$port" ;;
    threading) exec taskset -c 0 "$python" "$baselines/threading_jnhp.py" --port "$port" ;;
  esac >"$work/$1.log" 2>&1 &
  pid=$!
  wait_port "$1"
}

protocol() { case $1 in redis) echo resp ;; memcached) echo memcache ;; *) echo jnhp ;; esac; }
workload() { # workload NAME: jnhp bench flags
  case $1 in
    mixed-p1) echo "--pipeline 1" ;;
    mixed-p32) echo "--pipeline 32" ;;
    unique) echo "--unique-stores" ;;
    rate-p999) echo "--rate $rate" ;;
  esac
}

servers=(jnhpd redis memcached)
[ -f "$baselines/twisted_jnhp.py" ] && "$python" -c 'import twisted' 2>/dev/null && servers+=(twisted)
[ -f "$baselines/threading_jnhp.py" ] && servers+=(threading)
workloads=(mixed-p1 mixed-p32 unique rate-p999)

for r in $(seq "$repeats"); do
  for w in "${workloads[@]}"; do
    for s in "${servers[@]}"; do
      echo "round $r/$repeats: $w against $s" >&2
      start "$s"
      before=$(ticks "$pid")
      # shellcheck disable=SC2046
      if ! taskset -c 1 "$jnhp" --addr "127.0.0.1:$port" bench --protocol "$(protocol "$s")" \
        --connections 50 --seconds "$secs" $(workload "$w") --json --quiet >"$work/out.json"; then
        # A peer that cannot keep up (closes connections, answers wrongly)
        # is reported as failed; the comparison goes on.
        echo "$w against $s failed" >&2
        echo "{\"server\": \"$s\", \"workload\": \"$w\", \"failed\": true}" >>"$work/results.jsonl"
        stop
        continue
      fi
      after=$(ticks "$pid")
      stop
      record "$work/out.json" "$((after - before))" server "$s" workload "$w" >>"$work/results.jsonl"
    done
  done
done

"$python" - "$work/results.jsonl" "$secs" "$repeats" "$rate" <<'PY'
import json, statistics, sys, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
secs, repeats, rate = sys.argv[2], sys.argv[3], sys.argv[4]
med = lambda xs: statistics.median(xs)
def cell(server, workload, key):
    xs = [r[key] for r in rows if r["server"] == server and r["workload"] == workload and not r.get("failed")]
    return med(xs) if xs else None
servers = list(dict.fromkeys(r["server"] for r in rows))
titles = {
    "mixed-p1": "50 connections, pipeline 1, STORE:EXISTS:GET 10:10:80 over 10k prefilled names",
    "mixed-p32": "50 connections, pipeline 32, same mix",
    "unique": "50 connections, pipeline 1, 100% STOREs of new names",
    "rate-p999": f"open loop at {rate} requests/s, 50 connections, same mix",
}
print(f"median of {repeats} runs of {secs} s; server pinned to core 0, load to core 1")
for w, title in titles.items():
    print(f"\n{w}: {title}\n")
    print("| server | ops/s | p999 ms | CPU s per 1M requests | jnhpd ops/s ÷ peer | peer CPU ÷ jnhpd |")
    print("|---|---|---|---|---|---|")
    j_ops, j_cpu = cell("jnhpd", w, "ops_per_sec"), cell("jnhpd", w, "cpu_s_per_million")
    for s in servers:
        ops, p999, cpu = (cell(s, w, k) for k in ("ops_per_sec", "p999_ms", "cpu_s_per_million"))
        if ops is None:
            print(f"| {s} | failed (closed connections or wrong replies) | | | | |")
            continue
        ratio = "" if s == "jnhpd" or not j_ops else f"{j_ops / ops:.2f}×"
        cpu_ratio = "" if s == "jnhpd" or not j_cpu else f"{cpu / j_cpu:.2f}×"
        print(f"| {s} | {ops:,.0f} | {p999:.3f} | {cpu:.2f} | {ratio} | {cpu_ratio} |")
PY
