#!/usr/bin/env bash
# CPU per request, jnhpd and Redis 7 side by side in one run (issue "Less
# CPU per request"): the mixed workload (STORE:EXISTS:GET 10:10:80 over 10k
# names, 50 connections) at pipeline 1 and 32.
#   1. requests/s and user/system ns per request from /proc/PID/stat, each
#      server pinned to core 0, the load generator to core 1, RUNS runs of
#      SECONDS each, the two servers taking turns (medians, and the median
#      of each pair's jnhpd/Redis ratio); how busy the server's core was, and the most
#      it could serve on that core (1 / CPU per request): when the one-core
#      load generator is what caps requests/s, that ceiling is the
#      comparison that says something;
#   2. user-space instructions per request from valgrind's callgrind, which
#      counts the same for the same binary and workload however noisy the
#      machine is: the server runs under callgrind, a warm-up bench runs,
#      the counters are dumped and zeroed, the measured bench runs, and the
#      second dump's total is divided by the requests it served. The top of
#      jnhpd's profile (pipeline 32) is printed too.
#
#   bench/cpu.sh [SECONDS] [RUNS]        # default 4 s, 3 runs (shorter runs
#                                        # inflate the instruction counts: the
#                                        # constant costs weigh more)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-4}
runs=${2:-3}
root=$PWD
command -v redis-server >/dev/null && command -v valgrind >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server valgrind >/dev/null; }
cargo build --profile profiling --quiet --bin jnhpd --bin jnhp
jnhpd="$root/target/profiling/jnhpd"
jnhp="$root/target/profiling/jnhp"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=18431
hz=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

launch() { # launch SERVER [WRAPPER...]: the server on core 0, its pid in $pid
  local server=$1; shift
  refuse_busy_port
  case $server in
    jnhpd) taskset -c 0 "$@" "$jnhpd" --listen "127.0.0.1:$port" --log-level warn >"$work/$server.log" 2>&1 & ;;
    redis) taskset -c 0 "$@" redis-server --port "$port" --save "" --appendonly no --daemonize no \
             --logfile /dev/null >"$work/$server.log" 2>&1 & ;;
  esac
  pid=$!
  wait_port "$server"
}
protocol() { [ "$1" = redis ] && echo resp || echo jnhp; }
bench() { # bench SERVER PIPELINE SECONDS: the JSON report
  taskset -c 1 "$jnhp" --addr "127.0.0.1:$port" bench --protocol "$(protocol "$1")" \
    --connections 50 --pipeline "$2" --seconds "$3" --json --quiet
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Both run in this shell (not in $(...)), so the exit trap can stop the
# server they started.
measure() { # measure SERVER PIPELINE: "requests/s user-ns sys-ns" of one run, in $work/m
  launch "$1"
  bench "$1" "$2" 1 >/dev/null   # prefill and warm up
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  bench "$1" "$2" "$secs" >"$work/run.json"
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  stop
  python3 -c "import json; r = json.load(open('$work/run.json')); n = r['requests']
print(r['ops_per_sec'], ($u1 - $u0) / $hz * 1e9 / n, ($s1 - $s0) / $hz * 1e9 / n)" >"$work/m"
}
instructions() { # instructions SERVER PIPELINE: user-space instructions per request, in $work/m
  # The measured bench under callgrind (fewer requests: it runs ~50x
  # slower), counters zeroed after the warm-up.
  launch "$1" valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1.$2.%p.out"
  bench "$1" "$2" 2 >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  bench "$1" "$2" "$secs" >"$work/cg.json"
  callgrind_control --dump "$pid" >/dev/null 2>&1
  stop
  local dump ir
  dump=$(ls -t "$work"/cg."$1"."$2".*.out.* 2>/dev/null | head -1)
  ir=$(awk '/^summary:/ {print $2}' "$dump")
  python3 -c "print(round($ir / $(field "$work/cg.json" requests)))" >"$work/m"
}

# The two servers take turns, run by run, so each pair of runs shares the
# machine's mood of the moment (its speed drifts by tens of percent over
# minutes); the ratios are per pair, then the median.
echo "| server | pipeline | requests/s | user ns/request | sys ns/request | core busy | one-core ceiling, requests/s | instructions/request |"
echo "|---|---|---|---|---|---|---|---|"
ratios=()
for p in 1 32; do
  declare -A rate=() user=() sys=()
  rate_ratios=(); cpu_ratios=()
  for _ in $(seq "$runs"); do
    declare -A cpu=() now=()
    for s in jnhpd redis; do
      measure "$s" "$p"
      read -r r u y <"$work/m"
      rate[$s]+=" $r"; user[$s]+=" $u"; sys[$s]+=" $y"
      now[$s]=$r; cpu[$s]=$(python3 -c "print($u + $y)")
    done
    rate_ratios+=("$(python3 -c "print(${now[jnhpd]} / ${now[redis]})")")
    cpu_ratios+=("$(python3 -c "print(${cpu[jnhpd]} / ${cpu[redis]})")")
  done
  for s in jnhpd redis; do
    # shellcheck disable=SC2086 # the lists split into their runs
    r=$(median ${rate[$s]}); u=$(median ${user[$s]}); y=$(median ${sys[$s]})
    instructions "$s" "$p"
    printf '| %s | %s | %.0f | %.0f | %.0f | %.0f%% | %.0f | %s |\n' "$s" "$p" "$r" "$u" "$y" \
      "$(python3 -c "print($r*($u+$y)/1e7)")" "$(python3 -c "print(1e9/($u+$y))")" \
      "$(cat "$work/m")"
  done
  ratios+=("| $p | $(printf '%.2f' "$(median "${rate_ratios[@]}")")x | $(printf '%.2f' "$(median "${cpu_ratios[@]}")")x | $(printf '%s ' "${rate_ratios[@]}" | xargs printf '%.2f ') |")
done
echo
echo "jnhpd / Redis, per pair of runs (median; then each pair's requests/s ratio):"
echo
echo "| pipeline | requests/s | CPU per request | requests/s, each pair |"
echo "|---|---|---|---|"
printf '%s\n' "${ratios[@]}"
echo
# The profile: a whole run of jnhpd at pipeline 32 (warm-up included),
# written when it exits (a dump of zeroed counters loses the call stacks).
launch jnhpd valgrind --tool=callgrind --callgrind-out-file="$work/profile.out"
bench jnhpd 32 "$secs" >/dev/null
stop
echo
echo "Where jnhpd's instructions go at pipeline 32 (callgrind; inlined code counted in its caller's file):"
callgrind_annotate "$work/profile.out" 2>/dev/null | awk '/file:function/ {on=1; next} on && NF' | head -15 |
  sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/library/##; s# \[.*\]##'
