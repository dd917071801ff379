#!/usr/bin/env bash
# The cost of watching: jnhpd with its admin listener on and /metrics
# scraped every second, side by side with jnhpd without it and Redis 7,
# the compare workloads through `jnhp bench`:
#   mixed-p1   50 connections, pipeline 1, STORE:EXISTS:GET 10:10:80 over 10k names
#   mixed-p32  the same with pipeline 32
# Servers pinned to core 0, the load generator (and the scraper) to core 1.
#
#   bench/admin.sh [SECONDS] [REPEATS]     # default 5 s per run, median of 3
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
repeats=${2:-3}
root=$PWD

command -v redis-server >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}
cargo build --release --quiet --bin jnhpd --bin jnhp
jnhpd="$root/target/release/jnhpd"
jnhp="$root/target/release/jnhp"

work=$(mktemp -d)
pid=""
scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=18431
admin=18432

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

start() { # start NAME: the server NAME on $port, pinned to core 0
  refuse_busy_port
  case $1 in
    jnhpd) exec taskset -c 0 "$jnhpd" --listen "127.0.0.1:$port" --log-level warn ;;
    jnhpd-admin) exec taskset -c 0 "$jnhpd" --listen "127.0.0.1:$port" \
      --admin-listen "127.0.0.1:$admin" --log-level warn ;;
    redis) exec taskset -c 0 redis-server --port "$port" --save '' --appendonly no \
      --daemonize no --logfile /dev/null ;;
  esac >"$work/$1.log" 2>&1 &
  pid=$!
  wait_port "$1"
}
# Scrapes /metrics once a second (a bash loop on core 1: no extra tools).
scrape() {
  taskset -c 1 bash -c "while sleep 1; do exec 3<>/dev/tcp/127.0.0.1/$admin && \
    printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && cat <&3 >/dev/null; \
    exec 3<&-; done" &
  scraper=$!
}
protocol() { case $1 in redis*) echo resp ;; *) echo jnhp ;; esac; }

servers=(jnhpd-admin jnhpd redis)
for r in $(seq "$repeats"); do
  for w in 1 32; do
    for s in "${servers[@]}"; do
      echo "round $r/$repeats: pipeline $w against $s" >&2
      start "$s"
      [ "$s" = jnhpd-admin ] && scrape
      before=$(ticks "$pid")
      taskset -c 1 "$jnhp" --addr "127.0.0.1:$port" bench --protocol "$(protocol "$s")" \
        --connections 50 --pipeline "$w" --seconds "$secs" --json --quiet >"$work/out.json"
      after=$(ticks "$pid")
      if [ -n "$scraper" ]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; scraper=""; fi
      stop
      record "$work/out.json" "$((after - before))" server "$s" pipeline "$w" >>"$work/results.jsonl"
    done
  done
done

median_tables "$work/results.jsonl" "$secs" "$repeats" "server pinned to core 0, load and scraper to core 1" jnhpd-admin jnhpd redis
