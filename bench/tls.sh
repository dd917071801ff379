#!/usr/bin/env bash
# JNHP/1 over TLS side by side with Redis over TLS and with plain jnhpd,
# the compare workloads through `jnhp bench`:
#   mixed-p1   50 connections, pipeline 1, STORE:EXISTS:GET 10:10:80 over 10k names
#   mixed-p32  the same with pipeline 32
# Servers are pinned to core 0, the load generator to core 1. TLS 1.3 with
# an ECDSA P-256 certificate made here by openssl; no client certificates.
# Prints one table per workload: ops/s, p999, server CPU per 1M requests.
#
#   bench/tls.sh [SECONDS] [REPEATS]     # default 5 s per run, median of 3
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
repeats=${2:-3}
root=$PWD

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin jnhpd --bin jnhp
jnhpd="$root/target/release/jnhpd"
jnhp="$root/target/release/jnhp"

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=18411

(cd "$work"
 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
   -days 2 -subj "/CN=bench CA" 2>/dev/null
 openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
   -subj "/CN=localhost" 2>/dev/null
 printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext
 openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
   -days 1 -extfile ext 2>/dev/null)
printf '[server]\nlisten = []\n[tls]\nlisten = ["127.0.0.1:%s"]\ncert_file = "server.pem"\nkey_file = "server.key"\nmin_version = "1.3"\n' \
  "$port" >"$work/tls.toml"

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

start() { # start NAME: the server NAME on $port, pinned to core 0
  refuse_busy_port
  case $1 in
    jnhpd) exec taskset -c 0 "$jnhpd" --listen "127.0.0.1:$port" --log-level warn ;;
    jnhpd-tls) exec taskset -c 0 "$jnhpd" --config "$work/tls.toml" --log-level warn ;;
    redis-tls) exec taskset -c 0 redis-server --port 0 --tls-port "$port" --tls-cert-file "$work/server.pem" \
      --tls-key-file "$work/server.key" --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no \
      --tls-protocols TLSv1.3 --save '' --appendonly no --daemonize no --logfile /dev/null ;;
  esac >"$work/$1.log" 2>&1 &
  pid=$!
  wait_port "$1"
}
tls_flags() { case $1 in *-tls) echo "--tls --ca $work/ca.pem --server-name localhost" ;; esac; }
protocol() { case $1 in redis*) echo resp ;; *) echo jnhp ;; esac; }

servers=(jnhpd-tls redis-tls jnhpd)
for r in $(seq "$repeats"); do
  for w in 1 32; do
    for s in "${servers[@]}"; do
      echo "round $r/$repeats: pipeline $w against $s" >&2
      start "$s"
      before=$(ticks "$pid")
      # shellcheck disable=SC2046
      taskset -c 1 "$jnhp" --addr "127.0.0.1:$port" $(tls_flags "$s") bench --protocol "$(protocol "$s")" \
        --connections 50 --pipeline "$w" --seconds "$secs" --json --quiet >"$work/out.json"
      after=$(ticks "$pid")
      stop
      record "$work/out.json" "$((after - before))" server "$s" pipeline "$w" >>"$work/results.jsonl"
    done
  done
done

median_tables "$work/results.jsonl" "$secs" "$repeats" "server pinned to core 0, load to core 1; TLS 1.3, ECDSA P-256" jnhpd-tls redis-tls jnhpd
