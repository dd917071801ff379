#!/usr/bin/env bash
# STORE throughput through each kind of validator, side by side in one run:
#   none | function (max_bytes + regex) | process (allow-all program)
# against a bare spawn-and-wait loop of the same program and the Twisted
# spawnProcess baseline from bench/baselines; and an allow-all Python
# validator as `process` versus as `helper`, with the CPU each STORE costs
# (jnhpd and the programs it runs); the same helper written with the
# jnhp Python package (python/, jnhp.helper); and the Python client's
# pipelined GETs/s against redis-py's on a local Redis. Servers (and the
# programs they spawn) run on core 0, the load generator on core 1.
# Needs a virtual environment for the package and redis-py (made in a
# scratch directory: pip install ./python redis) and redis-server for
# the client comparison (skipped without it).
#
#   bench/validators.sh [SECONDS] [REPEATS]   # default 5 s per run, median of 3
#   bench/validators.sh ops [SECONDS] [REPEATS]  # only the decision log and
#                                                # deny cache section (ops_section)
#   bench/validators.sh wasm [SECONDS] [REPEATS] # only the WebAssembly section
#                                                # (wasm_section)
set -euo pipefail
cd "$(dirname "$0")/.."
only_ops=0
only_wasm=0
if [ "${1:-}" = ops ]; then only_ops=1; shift; fi
if [ "${1:-}" = wasm ]; then only_wasm=1; shift; fi
secs=${1:-5}
repeats=${2:-3}
conc=50
root=$PWD
allow="$root/bench/allow-all.sh"
allow_py="$root/bench/allow-all.py"
allow_helper="$root/bench/allow-all-helper.py"
# The system's python3, not a version manager's shim (which would add its
# own start-up to every spawn).
python=$(command -v /usr/bin/python3 || command -v python3)
baselines="$root/bench/baselines"

cargo build --release --quiet --bin jnhpd --example store_bench
jnhpd="$root/target/release/jnhpd"
load="$root/target/release/examples/store_bench"
if [ "$only_ops$only_wasm" = 00 ] && [ -f "$baselines/twisted_jnhp.py" ] && ! python3 -c 'import twisted' 2>/dev/null; then
  pip install --quiet twisted
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Servers run one at a time, each stopped (by PID) before the next starts.
port=18201
# run_server NAME CMD...: starts a server on core 0, waits until it answers,
# runs the load, stops the server by PID; prints the rate.
run_server() {
  local name=$1; shift
  taskset -c 0 "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local up=0
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=1; break; }
    sleep 0.1
  done
  [ "$up" = 1 ] || { echo "$name did not start; its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
  local before rate after
  before=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086 # load_extra: extra words for the load generator
  rate=$(taskset -c 1 "$load" --concurrency "$conc" --seconds "$secs" ${load_extra:-} stores "127.0.0.1:$port")
  after=$(cpu_ticks "$pid")
  # CPU microseconds per STORE, the server and its programs together.
  python3 -c "import sys; t, r, s = map(float, sys.argv[1:]); print(f'{t * 1e6 / $(getconf CLK_TCK) / (r * s):.1f}')" \
    "$((after - before))" "$rate" "$secs" >>"$work/$name.cpu"
  echo "$rate"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# cpu_ticks PID: user + system time of PID and its living children, plus
# what its reaped children used (utime stime cutime cstime).
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat")))
  done
  echo "$total"
}

config() { # config NAME BODY: writes a config file listening on $port; prints its path
  printf '[server]\nlisten = ["127.0.0.1:%d"]\n[log]\nlevel = "warn"\n%s\n' "$port" "$2" >"$work/$1.toml"
  echo "$work/$1.toml"
}

# The built-in function validators every section compares against:
# values of at most 1024 bytes, names of [a-z0-9-].
functions='
[[validator]]
kind = "function"
function = "max_bytes"
max = 1024
[[validator]]
kind = "function"
function = "regex"
field = "name"
pattern = "^[a-z0-9-]+$"'

med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Issue 27: what the decision log and the deny cache cost, each measured
# against the same setup without it, runs interleaved like the rest.
#  - decision log: unique STOREs through the inline function validators
#    (the cheapest chain, where a line per STORE weighs the most), the log
#    off, then on (a file; lines written, none dropped: checked).
#  - deny cache: every connection repeats one refused STORE against a
#    process validator that refuses everything, cache off (a program per
#    STORE), then on (the program runs once per connection).
ops_section() {
  # A port of its own: another run of this script (its other sections)
  # may be using 18201. Dynamic scope: config and run_server see it.
  local port=18241
  local deny="$work/deny-all.sh"
  printf '#!/bin/sh\necho JNHP:0\n' >"$deny"
  chmod +x "$deny"
  local refuser="
[[validator]]
kind = \"process\"
command = [\"$deny\"]
max_concurrent = 16"
  local cfg_log_off cfg_log_on cfg_cache_off cfg_cache_on
  cfg_log_off=$(config log_off "$functions")
  cfg_log_on=$(config log_on "[validation]
decision_log = \"$work/decisions.log\"
$functions")
  cfg_cache_off=$(config cache_off "$refuser")
  cfg_cache_on=$(config cache_on "$refuser
deny_cache_secs = 600")
  local r
  for r in $(seq "$repeats"); do
    echo "ops round $r of $repeats" >&2
    run_server log_off "$jnhpd" --config "$cfg_log_off" >>"$work/log_off.rates"
    run_server log_on "$jnhpd" --config "$cfg_log_on" >>"$work/log_on.rates"
    wc -l <"$work/decisions.log" >>"$work/log_on.lines"
    rm -f "$work/decisions.log"
    load_extra="--refused bad" run_server cache_off "$jnhpd" --config "$cfg_cache_off" >>"$work/cache_off.rates"
    load_extra="--refused bad" run_server cache_on "$jnhpd" --config "$cfg_cache_on" >>"$work/cache_on.rates"
  done
  local n
  echo
  echo "Decision log and deny cache (issue 27), $conc connections, median of $repeats runs of ${secs} s ($(nproc) cores: server on core 0, load on core 1)"
  echo
  echo "| run | requests/s | CPU per request (jnhpd + programs) | ratio |"
  echo "|---|---|---|---|"
  for n in log_off log_on cache_off cache_on; do
    eval "rate_$n=\$(med <\"\$work/$n.rates\")"
    eval "cpu_$n=\$(med <\"\$work/$n.cpu\")"
  done
  echo "| unique STOREs, function validators, decision log off | $rate_log_off | $cpu_log_off µs | 1.00x |"
  echo "| the same, decision log on (a file; lines per run: $(paste -sd/ "$work/log_on.lines")) | $rate_log_on | $cpu_log_on µs | $(ratio "$rate_log_on" "$rate_log_off") |"
  echo "| one refused STORE repeated, process validator, deny cache off | $rate_cache_off | $cpu_cache_off µs | 1.00x |"
  echo "| the same, deny_cache_secs = 600 | $rate_cache_on | $cpu_cache_on µs | $(ratio "$rate_cache_on" "$rate_cache_off") |"
}

# Issue 26: a wasm validator next to the built-in function validators
# doing the same check (max_bytes 1024 and ^[a-z0-9-]+$ on the name:
# bench/wasm-policy.wat), a module that allows without looking (what the
# instance checkout, the copy of the STORE and the calls cost:
# bench/wasm-allow.wat), no validator, a persistent helper and a process
# per STORE (both allow-all). Unique STOREs, runs interleaved.
wasm_section() {
  local port=18261
  local cfg_w_none cfg_w_function cfg_w_policy cfg_w_allow cfg_w_helper cfg_w_process
  cfg_w_none=$(config w_none '')
  cfg_w_function=$(config w_function "$functions")
  cfg_w_policy=$(config w_policy "
[[validator]]
kind = \"wasm\"
module = \"$root/bench/wasm-policy.wat\"")
  cfg_w_allow=$(config w_allow "
[[validator]]
kind = \"wasm\"
module = \"$root/bench/wasm-allow.wat\"")
  cfg_w_helper=$(config w_helper "
[[validator]]
kind = \"helper\"
command = [\"$python\", \"$allow_helper\"]
children = 1")
  cfg_w_process=$(config w_process "
[[validator]]
kind = \"process\"
command = [\"$allow\"]
max_concurrent = 16")
  local r n
  for r in $(seq "$repeats"); do
    echo "wasm round $r of $repeats" >&2
    for n in w_none w_function w_policy w_allow w_helper w_process; do
      eval "run_server $n \"\$jnhpd\" --config \"\$cfg_$n\"" >>"$work/$n.rates"
    done
  done
  echo
  echo "WebAssembly validators (issue 26), unique STOREs, $conc connections, median of $repeats runs of ${secs} s ($(nproc) cores: server on core 0, load on core 1)"
  echo
  echo "| validator | STOREs/s | CPU per STORE (jnhpd + programs) | CPU vs function |"
  echo "|---|---|---|---|"
  for n in w_none w_function w_policy w_allow w_helper w_process; do
    eval "rate_$n=\$(med <\"\$work/$n.rates\")"
    eval "cpu_$n=\$(med <\"\$work/$n.cpu\")"
  done
  echo "| none | $rate_w_none | $cpu_w_none µs | $(ratio "$cpu_w_none" "$cpu_w_function") |"
  echo "| function: max_bytes + regex | $rate_w_function | $cpu_w_function µs | 1.00x |"
  echo "| wasm: the same check (wasm-policy.wat) | $rate_w_policy | $cpu_w_policy µs | $(ratio "$cpu_w_policy" "$cpu_w_function") |"
  echo "| wasm: allows without looking (wasm-allow.wat) | $rate_w_allow | $cpu_w_allow µs | $(ratio "$cpu_w_allow" "$cpu_w_function") |"
  echo "| helper: Python, allow-all | $rate_w_helper | $cpu_w_helper µs | $(ratio "$cpu_w_helper" "$cpu_w_function") |"
  echo "| process per STORE: sh, allow-all | $rate_w_process | $cpu_w_process µs | $(ratio "$cpu_w_process" "$cpu_w_function") |"
}

ratio() { python3 -c "import sys; a, b = sys.argv[1:]; print('n/a' if 'n/a' in (a, b) else f'{float(a) / float(b):.2f}x')" "$1" "$2"; }
if [ "$only_ops" = 1 ]; then ops_section; exit 0; fi
if [ "$only_wasm" = 1 ]; then wasm_section; exit 0; fi

cfg_none=$(config none '')
cfg_function=$(config function "$functions")
cfg_py_process=$(config py_process "
[[validator]]
kind = \"process\"
command = [\"$python\", \"$allow_py\"]
max_concurrent = 16")
cfg_py_helper=$(config py_helper "
[[validator]]
kind = \"helper\"
command = [\"$python\", \"$allow_helper\"]
children = 1")
# The jnhp package and redis-py, in a venv of their own.
# (From a copy: pip builds in the source tree.)
"$python" -m venv "$work/venv"
cp -r "$root/python" "$work/python-src"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "$work/python-src" redis
venv_python="$work/venv/bin/python"
cfg_py_jnhp=$(config py_jnhp "
[[validator]]
kind = \"helper\"
command = [\"$venv_python\", \"$root/bench/allow-all-jnhp.py\"]
children = 1")
has_redis=0
command -v redis-server >/dev/null && has_redis=1
# run_gets NAME CMD...: starts a server on core 0, runs the pipelined-GET
# client on core 1 against it; prints GETs/s.
gets_depth=100
run_gets() {
  local name=$1 client=$2; shift 2
  taskset -c 0 "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local up=0
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=1; break; }
    sleep 0.1
  done
  [ "$up" = 1 ] || { echo "$name did not start; its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
  taskset -c 1 "$venv_python" "$root/bench/pipelined_gets.py" "$client" "127.0.0.1:$port" "$secs" "$gets_depth" 10000
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
cfg_process=$(config process "
[[validator]]
kind = \"process\"
command = [\"$allow\"]
max_concurrent = 16")
has_twisted=0
python3 -c 'import twisted' 2>/dev/null && has_twisted=1

# The runs are interleaved (every setup once, then again), so a slow drift
# of the machine's speed hits every setup alike.
for r in $(seq "$repeats"); do
  echo "round $r of $repeats" >&2
  run_server none "$jnhpd" --config "$cfg_none" >>"$work/none.rates"
  run_server function "$jnhpd" --config "$cfg_function" >>"$work/function.rates"
  run_server process "$jnhpd" --config "$cfg_process" >>"$work/process.rates"
  taskset -c 0 "$load" --concurrency 16 --seconds "$secs" spawn "$allow" >>"$work/spawn.rates"
  run_server py_process "$jnhpd" --config "$cfg_py_process" >>"$work/py_process.rates"
  run_server py_helper "$jnhpd" --config "$cfg_py_helper" >>"$work/py_helper.rates"
  run_server py_jnhp "$jnhpd" --config "$cfg_py_jnhp" >>"$work/py_jnhp.rates"
  run_gets jnhp_gets jnhp "$jnhpd" --config "$cfg_none" >>"$work/jnhp_gets.rates"
  if [ "$has_redis" = 1 ]; then
    run_gets redis_gets redis redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >>"$work/redis_gets.rates"
  fi
  if [ "$has_twisted" = 1 ]; then
    run_server twisted python3 "$baselines/twisted_jnhp.py" --port "$port" --validator "$allow" >>"$work/twisted.rates"
  fi
done
none=$(med <"$work/none.rates")
function=$(med <"$work/function.rates")
process=$(med <"$work/process.rates")
spawn=$(med <"$work/spawn.rates")
py_process=$(med <"$work/py_process.rates")
py_helper=$(med <"$work/py_helper.rates")
py_jnhp=$(med <"$work/py_jnhp.rates")
jnhp_gets=$(med <"$work/jnhp_gets.rates")
redis_gets=n/a
[ "$has_redis" = 1 ] && redis_gets=$(med <"$work/redis_gets.rates")
cpu_jnhp=$(med <"$work/py_jnhp.cpu")
cpu_none=$(med <"$work/none.cpu")
cpu_helper=$(med <"$work/py_helper.cpu")
cpu_py_process=$(med <"$work/py_process.cpu")
twisted=n/a
[ "$has_twisted" = 1 ] && twisted=$(med <"$work/twisted.rates")

echo
echo "STORE throughput, $conc connections, unique names, median of $repeats runs of ${secs} s ($(nproc) cores: server on core 0, load on core 1)"
echo
echo "| run | STOREs/s | ratio |"
echo "|---|---|---|"
echo "| jnhpd, no validator | $none | 1.00x |"
echo "| jnhpd, function validators (max_bytes + regex) | $function | $(ratio "$function" "$none") of none |"
echo "| jnhpd, process validator (allow-all.sh, max_concurrent 16) | $process | $(ratio "$process" "$spawn") of bare spawn loop, $(ratio "$process" "$twisted") of Twisted |"
echo "| bare spawn-and-wait loop of allow-all.sh, 16 workers | $spawn | |"
echo "| Twisted spawnProcess baseline (bench/baselines) | $twisted | |"
echo
echo "| allow-all Python validator | STOREs/s | CPU per STORE (jnhpd + Python) | ratio |"
echo "|---|---|---|---|"
echo "| none (for reference) | $none | $cpu_none µs | |"
echo "| kind = \"process\" (a python3 per STORE) | $py_process | $cpu_py_process µs | |"
echo "| kind = \"helper\" (one python3, children = 1) | $py_helper | $cpu_helper µs | $(ratio "$py_helper" "$py_process") the STOREs/s of process; $(ratio "$cpu_helper" "$cpu_none") the CPU per STORE of none |"
echo
echo "| Python helper (allow-all, children = 1) | STOREs/s | CPU per STORE | ratio |"
echo "|---|---|---|---|"
echo "| hand-written (bench/allow-all-helper.py) | $py_helper | $cpu_helper µs | 1.00x |"
echo "| jnhp.helper (bench/allow-all-jnhp.py) | $py_jnhp | $cpu_jnhp µs | $(ratio "$py_jnhp" "$py_helper") of hand-written; $(ratio "$py_jnhp" "$py_process") of a process per STORE |"
echo
echo "| one Python client, pipelines of $gets_depth GETs (64-byte values, 10k names) | GETs/s | ratio |"
echo "|---|---|---|"
echo "| jnhp.Client against jnhpd (no validator) | $jnhp_gets | $(ratio "$jnhp_gets" "$redis_gets") of redis-py |"
echo "| redis-py against redis-server (no persistence) | $redis_gets | |"

ops_section
wasm_section
