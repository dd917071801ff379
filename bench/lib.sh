# Sourced by the benchmark scripts: one server at a time on $port, pinned
# and measured the same way everywhere. Callers set $work (a scratch
# directory) and $port, and keep the server's pid in $pid.

# Refuses to measure when something else already listens on $port.
refuse_busy_port() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use: refusing to measure some other server" >&2
    exit 1
  fi
}

# wait_port NAME: waits (up to 60 s) until the server NAME listens on $port.
wait_port() {
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start:" >&2
  cat "$work/$1.log" >&2 2>/dev/null || true
  exit 1
}

# Stops the server in $pid and waits for it.
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

# ticks PID: user + system CPU ticks the process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# record REPORT TICKS KEY VALUE...: prints `jnhp bench`'s JSON REPORT as one
# line with the server's CPU seconds per million requests and the given
# keys added.
record() {
  python3 - "$(getconf CLK_TCK)" "$@" <<'PY'
import json, sys
hz, path, ticks, *pairs = sys.argv[1:]
report = json.load(open(path))
report["cpu_s_per_million"] = int(ticks) / int(hz) / (report["requests"] / 1e6)
report.update(zip(pairs[::2], pairs[1::2]))
print(json.dumps(report))
PY
}

# median_tables RESULTS SECS REPEATS SETUP SERVER...: from `record`'s lines
# (with `server` and `pipeline` keys), one table per pipeline depth of the
# medians of each server, with the first server's ops/s divided by each
# other's. SETUP says where things ran.
median_tables() {
  python3 - "$@" <<'PY'
import json, statistics, sys
path, secs, repeats, setup, *servers = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
def cell(server, pipeline, key):
    return statistics.median(r[key] for r in rows if r["server"] == server and r["pipeline"] == pipeline)
print(f"median of {repeats} runs of {secs} s; {setup}")
for p in sorted({r["pipeline"] for r in rows}, key=int):
    print(f"\nmixed, pipeline {p}: 50 connections, STORE:EXISTS:GET 10:10:80 over 10k names\n")
    print(f"| server | ops/s | p999 ms | CPU s per 1M requests | {servers[0]} ops/s ÷ this |")
    print("|---|---|---|---|---|")
    ref = cell(servers[0], p, "ops_per_sec")
    for s in servers:
        ops, p999, cpu = (cell(s, p, k) for k in ("ops_per_sec", "p999_ms", "cpu_s_per_million"))
        ratio = "" if s == servers[0] else f"{ref / ops:.2f}×"
        print(f"| {s} | {ops:,.0f} | {p999:.3f} | {cpu:.2f} | {ratio} |")
PY
}
