//! Persistent helpers (`kind = "helper"`) end to end: real helper programs
//! written at test time; one test (or more) per clause of "Persistent
//! helpers" in validators.md.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Server, children_of, script, wait_for_file, wait_not_running};
use nix::sys::signal::Signal;

/// A Python helper: records its pid in `starts` when it starts, then runs
/// `behaviour` for each request with `id_`, `name`, `value` set; `reply(id_,
/// verdict)` answers (thread-safe, flushed).
fn helper(dir: &Path, name: &str, prelude: &str, behaviour: &str) -> PathBuf {
    let indented: String = behaviour.lines().map(|l| format!("    {l}\n")).collect();
    script(
        dir,
        name,
        &format!(
            "exec python3 -c '{}'",
            format!(
                r#"import os, sys, threading, time
D = "{dir}"
with open(os.path.join(D, "starts"), "a") as f:
    f.write("%d\n" % os.getpid())
lock = threading.Lock()
def reply(id_, verdict):
    with lock:
        sys.stdout.write("%s JNHP:%s\n" % (id_, verdict))
        sys.stdout.flush()
{prelude}
for raw in sys.stdin:
    id_, name, value = raw.rstrip("\n").split(" ", 2)
{indented}"#,
                dir = dir.display()
            )
            .replace('\'', "'\\''")
        ),
    )
}

fn config(program: &Path, extra: &str) -> String {
    format!(
        "[[validator]]\nkind = \"helper\"\ncommand = [\"{}\"]\n{extra}\n",
        program.display()
    )
}

fn starts(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("starts"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

const ALLOW_UNLESS_BAD: &str = "reply(id_, 0 if value.startswith(\"bad\") else 1)";

#[test]
fn a_helper_answers_many_stores() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(d.path(), "h", "", ALLOW_UNLESS_BAD);
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, ""));
    let mut c = s.connect();
    for i in 0..50 {
        assert_eq!(c.ask(&format!("STORE ok{i} value {i}")), "W00T!");
        assert_eq!(c.ask(&format!("STORE bad{i} bad value")), "RARGH!");
    }
    assert_eq!(starts(&root).len(), 1, "one helper served them all");
}

/// Replies may come in any order: each is matched to its request by id.
#[test]
fn replies_out_of_order_are_matched_by_id() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    // Answers in pairs, the second request first.
    let prog = helper(
        d.path(),
        "h",
        "held = []",
        "held.append((id_, value))\nif len(held) == 2:\n    for i, v in reversed(held):\n        reply(i, 0 if v.startswith(\"bad\") else 1)\n    held = []",
    );
    let s = Server::start_in(d, &config(&prog, "children = 1"));
    let addr = s.addr();
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(2));
        let workers: Vec<_> = ["good", "bad"]
            .into_iter()
            .map(|value| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    barrier.wait();
                    c.ask(&format!("STORE {value}{round} {value}"))
                })
            })
            .collect();
        let replies: Vec<String> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(replies, ["W00T!", "RARGH!"], "round {round}");
    }
}

#[test]
fn a_helper_that_crashes_fails_its_requests_and_is_replaced() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(
        d.path(),
        "h",
        "",
        "if value == \"crash\":\n    os._exit(3)\nreply(id_, 1)",
    );
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, ""));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a ok"), "W00T!");
    assert_eq!(c.ask("STORE b crash"), "RARGH!", "on_failure = reject");
    let warning = s.log.wait_for("exited (exit status: 3)");
    assert!(warning.contains("1 requests in flight fail"), "{warning}");
    assert_eq!(
        c.ask("STORE c ok"),
        "W00T!",
        "a fresh helper serves the next one"
    );
    assert_eq!(starts(&root).len(), 2);
    // The dead helper was reaped: no zombie among jnhpd's children.
    let deadline = Instant::now() + PATIENCE;
    while children_of(s.pid()).iter().any(|(_, state)| state == "Z") {
        assert!(
            Instant::now() < deadline,
            "a zombie: {:?}",
            children_of(s.pid())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn on_failure_allow_applies_to_helper_failures() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(
        d.path(),
        "h",
        "",
        "if value == \"crash\":\n    os._exit(3)\nreply(id_, 0)",
    );
    let s = Server::start_in(d, &config(&prog, "on_failure = \"allow\""));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a crash"), "W00T!");
    assert_eq!(c.ask("STORE b no"), "RARGH!", "a deny is still a deny");
}

#[test]
fn a_hung_helper_times_out_and_is_replaced() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(
        d.path(),
        "h",
        "",
        "if value == \"hang\":\n    time.sleep(600)\nreply(id_, 1)",
    );
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, "timeout_ms = 300"));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a hang"), "RARGH!");
    s.log.wait_for("a request timed out (300 ms)");
    assert_eq!(c.ask("STORE b ok"), "W00T!");
    let pids = starts(&root);
    assert_eq!(pids.len(), 2);
    wait_not_running(pids[0]);
}

#[test]
fn garbage_or_an_unknown_id_breaks_the_helper_a_malformed_verdict_fails_one_request() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(
        d.path(),
        "h",
        "",
        "if value == \"garbage\":\n    sys.stdout.write(\"hello there\\n\"); sys.stdout.flush()\n\
         elif value == \"unknown\":\n    reply(999, 1)\n\
         elif value == \"malformed\":\n    reply(id_, \"abc\")\n\
         else:\n    reply(id_, 1)",
    );
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, "timeout_ms = 2000"));
    let mut c = s.connect();
    assert_eq!(c.ask("STORE a malformed"), "RARGH!");
    assert_eq!(c.ask("STORE b ok"), "W00T!");
    assert_eq!(
        starts(&root).len(),
        1,
        "a malformed verdict fails only its request"
    );
    s.log.wait_for("malformed verdict");

    assert_eq!(c.ask("STORE c garbage"), "RARGH!");
    s.log
        .wait_for("wrote a line that is not a reply: \"hello there\"");
    assert_eq!(c.ask("STORE d ok"), "W00T!");
    assert_eq!(starts(&root).len(), 2);

    assert_eq!(c.ask("STORE e unknown"), "RARGH!");
    s.log
        .wait_for("replied to request 999, which is not in flight");
    assert_eq!(c.ask("STORE f ok"), "W00T!");
    assert_eq!(starts(&root).len(), 3);
}

#[test]
fn a_helper_flooding_stderr_is_logged_capped_and_keeps_serving() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(
        d.path(),
        "h",
        "for i in range(20000):\n    sys.stderr.write(\"noise %d\\n\" % i)\nsys.stderr.flush()",
        "reply(id_, 1)",
    );
    let s = Server::start_in(d, &config(&prog, ""));
    assert_eq!(s.connect().ask("STORE a ok"), "W00T!");
    s.log.wait_for("stderr: noise 0");
    s.log.wait_for("too many stderr lines; some are not logged");
    assert!(s.log.count("stderr: noise") < 1000, "the log was flooded");
}

#[test]
fn a_helper_is_recycled_after_max_requests() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(d.path(), "h", "", "reply(id_, 1)");
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, "max_requests = 3"));
    let mut c = s.connect();
    for i in 0..7 {
        assert_eq!(c.ask(&format!("STORE n{i} v")), "W00T!");
    }
    let pids = starts(&root);
    assert_eq!(pids.len(), 3, "7 requests, 3 per helper");
    // A retired helper has its stdin closed and exits on its own.
    wait_not_running(pids[0]);
    wait_not_running(pids[1]);
}

#[test]
fn children_and_concurrency_are_never_exceeded() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    // Each request is answered 0.3 s later from its own thread; the helper
    // records how many it had in flight at most.
    let prog = helper(
        d.path(),
        "h",
        "inflight = [0]\ndef later(i):\n    time.sleep(0.3)\n    with lock:\n        inflight[0] -= 1\n    reply(i, 1)",
        "with lock:\n    inflight[0] += 1\n    open(os.path.join(D, \"inflight-%d\" % os.getpid()), \"a\").write(\"%d\\n\" % inflight[0])\nthreading.Thread(target=later, args=(id_,)).start()",
    );
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, "children = 2\nconcurrency = 3"));
    let addr = s.addr();
    let workers: Vec<_> = (0..12)
        .map(|i| std::thread::spawn(move || Client::connect(addr).ask(&format!("STORE n{i} v"))))
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), "W00T!");
    }
    let pids = starts(&root);
    assert!(pids.len() <= 2, "helpers started: {pids:?}");
    for pid in pids {
        let counts =
            std::fs::read_to_string(root.join(format!("inflight-{pid}"))).unwrap_or_default();
        let most = counts
            .lines()
            .map(|l| l.parse::<u32>().unwrap())
            .max()
            .unwrap_or(0);
        assert!(most <= 3, "helper {pid} had {most} requests in flight");
    }
}

#[test]
fn a_crash_loop_backs_off_and_stores_are_answered_at_once() {
    let d = tempfile::tempdir().unwrap();
    let prog = script(
        d.path(),
        "h",
        &format!("echo $$ >> {}/starts\nexit 1", d.path().display()),
    );
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, ""));
    let mut c = s.connect();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.ask(&format!("STORE n{i} v")), "RARGH!");
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = starts(&root).len();
    // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s: about six starts in three seconds, not
    // one per STORE.
    assert!(
        (2..=10).contains(&started),
        "{started} starts for {i} STOREs"
    );
    assert!(
        i > 2 * started,
        "STOREs waited for restarts: {i} STOREs, {started} starts"
    );
    s.log
        .wait_for("failed 3 times in a row before serving; next start in 200 ms");
}

/// A gated helper answers only once the file `release` exists.
fn gated(dir: &Path) -> PathBuf {
    helper(
        dir,
        "gated",
        "def later(i):\n    while not os.path.exists(os.path.join(D, \"release\")):\n        time.sleep(0.02)\n    reply(i, 1)",
        "open(os.path.join(D, \"got-\" + name), \"w\").close()\nthreading.Thread(target=later, args=(id_,)).start()",
    )
}

#[test]
fn sighup_swaps_pools_without_failing_requests_in_flight() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = gated(d.path());
    let root = d.path().to_path_buf();
    let s = Server::start_in(d, &config(&prog, ""));
    let mut in_flight = s.connect();
    in_flight.send(b"STORE old v\r\n");
    wait_for_file(&root.join("got-old"));
    let deny_all = script(&root, "deny", "for v; do :; done; echo JNHP:0");
    std::fs::write(
        s.config.as_ref().unwrap(),
        format!(
            "[[validator]]\nkind = \"process\"\ncommand = [\"{}\"]\n",
            deny_all.display()
        ),
    )
    .unwrap();
    s.signal(Signal::SIGHUP);
    s.log.wait_for("configuration reloaded");
    assert_eq!(s.connect().ask("STORE new v"), "RARGH!", "the new chain");
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(in_flight.reply(), "W00T!", "served by the old pool");
    // The old pool shuts down once its last request is done.
    let old = starts(&root)[0];
    wait_not_running(old);
}

#[test]
fn helpers_exit_when_jnhpd_stops() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    // Ignores the closing of its stdin: must be killed after 2 s.
    let prog = helper(
        d.path(),
        "h",
        "import signal",
        "reply(id_, 1)\nif value == \"stubborn\":\n    sys.stdin.close()\n    time.sleep(600)",
    );
    let root = d.path().to_path_buf();
    let mut s = Server::start_in(d, &config(&prog, ""));
    assert_eq!(s.connect().ask("STORE a stubborn"), "W00T!");
    let pid = starts(&root)[0];
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
    wait_not_running(pid);
}

/// On SIGTERM helpers see their stdin closed and get time to exit on their
/// own (they used to be killed at once with the runtime).
#[test]
fn sigterm_closes_helpers_stdin_and_lets_them_exit() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    // After its input ends it takes a moment to clean up, then says so.
    let prog = helper(
        d.path(),
        "h",
        "import atexit\natexit.register(lambda: (time.sleep(0.5), open(os.path.join(D, \"clean-exit\"), \"w\").close()))",
        "reply(id_, 1)",
    );
    let root = d.path().to_path_buf();
    let mut s = Server::start_in(d, &config(&prog, ""));
    assert_eq!(s.connect().ask("STORE a b"), "W00T!");
    let pid = starts(&root)[0];
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit().code(), Some(0));
    wait_not_running(pid);
    assert!(
        root.join("clean-exit").exists(),
        "the helper was killed before it could exit"
    );
}

/// CPU time (user + system) process `pid` has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant of the system.
    let per_sec = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_sec)
}

/// Starts jnhpd with helper `prog`, sends STOREs until the pool backs off,
/// then checks that the idle daemon sleeps through the back-off and after
/// it rather than spinning.
fn backing_off_is_idle(prog: &Path, extra: &str, d: tempfile::TempDir) {
    let s = Server::start_in(d, &config(prog, extra));
    let mut c = s.connect();
    for i in 0..3 {
        assert_eq!(c.ask(&format!("STORE n{i} v")), "RARGH!");
    }
    s.log
        .wait_for("failed 2 times in a row before serving; next start in 100 ms");
    // The back-off (0.1 s) ends within the window measured.
    let before = cpu_time(s.pid());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(s.pid()) - before;
    let share = used.as_secs_f64() / started.elapsed().as_secs_f64();
    assert!(
        share < 0.2,
        "idle jnhpd used {used:?} of CPU in {:?}",
        started.elapsed()
    );
    // And it still serves: the back-off has ended, a helper is tried again.
    assert_eq!(c.ask("STORE later v"), "RARGH!");
}

/// A helper answering with ids never sent: broken before serving, again
/// and again. The back-off must sleep, not spin (issue 21, item 1).
#[test]
fn a_helper_replying_with_wrong_ids_backs_off_without_spinning() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let prog = helper(d.path(), "h", "", "reply(int(id_) + 1000, 1)");
    backing_off_is_idle(&prog, "", d);
}

/// A helper that closes its stdout can never answer: broken before
/// serving. The back-off must sleep, not spin (issue 21, item 1).
#[test]
fn a_helper_closing_its_stdout_backs_off_without_spinning() {
    let d = tempfile::tempdir().unwrap();
    let prog = script(d.path(), "h", "exec >&-\nwhile read line; do :; done");
    backing_off_is_idle(&prog, "timeout_ms = 500", d);
}

/// Waits for `file` (written by a rename, so never half-written) and
/// returns the pid in it.
fn pid_in(file: &Path) -> i32 {
    wait_for_file(file);
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A helper detaches a process with a cleared environment through a
/// subshell that is still alive when the helper exits right after: the
/// subshell is killed as an orphan, and the process it leaves is an orphan
/// that arrives during that very sweep. It must not wait for another run
/// to end (issue 21, item 13).
#[test]
fn an_orphan_left_by_a_killed_orphan_is_killed_too() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let prog = script(
        &root,
        "h",
        &format!(
            "cd {}\nread line\n\
             (env -i setsid sleep 301 & echo $! > orphan.tmp && mv orphan.tmp orphan; wait) &\n\
             while [ ! -e orphan ]; do sleep 0.01; done\nexit 0",
            root.display()
        ),
    );
    let s = Server::start_in(d, &config(&prog, ""));
    assert_eq!(s.connect().ask("STORE a v"), "RARGH!");
    let orphan = pid_in(&root.join("orphan"));
    wait_not_running(orphan);
    assert!(!s.log.all().contains("panicked"), "{}", s.log.all());
}

/// A helper that keeps running detaches a process with a cleared
/// environment whose parent exits at once: the process becomes jnhpd's
/// orphan while the helper lives on, and is killed without waiting for the
/// helper (or another run) to end (issue 21, item 13).
#[test]
fn an_orphan_of_a_running_helper_is_killed_as_soon_as_it_arrives() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let prog = script(
        &root,
        "h",
        &format!(
            "cd {}\necho $$ >> starts\nwhile read id name value; do\n\
             (env -i setsid sleep 301 & echo $! > orphan.tmp && mv orphan.tmp orphan)\n\
             echo \"$id JNHP:1\"\ndone",
            root.display()
        ),
    );
    let s = Server::start_in(d, &config(&prog, ""));
    assert_eq!(s.connect().ask("STORE a v"), "W00T!");
    let orphan = pid_in(&root.join("orphan"));
    wait_not_running(orphan);
    let helper = starts(&root)[0];
    assert!(common::is_running(helper), "the helper itself lives on");
}

/// With `children = 2`, two STOREs at once go to two helpers: requests
/// are spread over the children, not piled on the first (issue 21,
/// item 16).
#[test]
fn concurrent_stores_are_spread_over_children() {
    require!(Python3);
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let prog = helper(
        d.path(),
        "gated",
        "def later(i):\n    while not os.path.exists(os.path.join(D, \"release\")):\n        time.sleep(0.02)\n    reply(i, 1)",
        "open(os.path.join(D, \"got-\" + name), \"w\").write(str(os.getpid()))\nthreading.Thread(target=later, args=(id_,)).start()",
    );
    let s = Server::start_in(d, &config(&prog, "children = 2\nconcurrency = 8"));
    let mut first = s.connect();
    first.send(b"STORE a v\r\n");
    wait_for_file(&root.join("got-a"));
    let mut second = s.connect();
    second.send(b"STORE b v\r\n");
    wait_for_file(&root.join("got-b"));
    std::fs::write(root.join("release"), "").unwrap();
    assert_eq!(first.reply(), "W00T!");
    assert_eq!(second.reply(), "W00T!");
    let pid = |name: &str| std::fs::read_to_string(root.join(format!("got-{name}"))).unwrap();
    assert_ne!(pid("a"), pid("b"), "both STOREs went to one helper");
    assert_eq!(starts(&root).len(), 2);
}
