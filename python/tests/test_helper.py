"""jnhp.helper: helpers written with it, run by the real jnhpd."""

import os
import subprocess
import sys
import textwrap
import time

import jnhp

from conftest import helper_config, write_script

PRELUDE = "import sys, time, asyncio, threading\nimport jnhp.helper\n"


def helper_server(jnhpd_factory, tmp_path, body, **keys):
    script = write_script(tmp_path, "check.py", PRELUDE + textwrap.dedent(body))
    return jnhpd_factory(helper_config(script, **keys))


def test_a_ten_line_helper_allows_and_denies(jnhpd_factory, tmp_path):
    server = helper_server(
        jnhpd_factory,
        tmp_path,
        """
        def check(name: bytes, value: bytes) -> bool:
            return b"forbidden" not in value

        jnhp.helper.run(check)
        """,
    )
    client = jnhp.Client(server.addr)
    assert client.store("a", "fine") is True
    assert client.store("b", "a forbidden word") is False
    answers = client.pipeline().store("c", "x").store("d", "forbidden").store("e", "y").execute()
    assert answers == [True, False, True]


def test_the_decorator_form_and_async_checks(jnhpd_factory, tmp_path):
    server = helper_server(
        jnhpd_factory,
        tmp_path,
        """
        @jnhp.helper.run(concurrency=4)
        async def check(name, value):
            await asyncio.sleep(0)
            return name.startswith(b"ok")
        """,
    )
    client = jnhp.Client(server.addr)
    assert client.store("ok1", "x") is True
    assert client.store("no1", "x") is False


def test_a_check_that_raises_fails_that_request_only(jnhpd_factory, tmp_path):
    for prefix in ("", "async "):
        server = helper_server(
            jnhpd_factory,
            tmp_path,
            f"""
            {prefix}def check(name, value):
                if value == b"boom":
                    raise RuntimeError("kaboom")
                if value == b"none":
                    return None
                if value == b"exit":
                    sys.exit(3)
                print("a stray print goes to stderr")
                return True

            jnhp.helper.run(check)
            """,
        )
        client = jnhp.Client(server.addr)
        assert client.store("a", "boom") is False  # on_failure = "reject"
        assert client.store("b", "none") is False  # not a bool: a failure too
        assert client.store("b2", "exit") is False  # sys.exit in a check too
        assert client.store("c", "fine") is True  # the helper still serves
        server.wait_for("kaboom")
        server.wait_for("not a bool")
        server.wait_for("a stray print goes to stderr")
        log = server.log()
        assert "malformed" in log.lower() or "failed" in log
        assert "restart" not in log.lower() and "broken" not in log.lower()
        server.stop()


def test_a_failure_is_decided_by_on_failure(jnhpd_factory, tmp_path):
    server = helper_server(
        jnhpd_factory,
        tmp_path,
        """
        def check(name, value):
            raise ValueError("cannot decide")

        jnhp.helper.run(check)
        """,
        on_failure="allow",
    )
    assert jnhp.Client(server.addr).store("a", "x") is True


def test_a_slow_check_does_not_hold_back_fast_ones(jnhpd_factory, tmp_path):
    for prefix, wait in (("", "release.wait(60)"), ("async ", "await asyncio.get_running_loop().run_in_executor(None, release.wait, 60)")):
        server = helper_server(
            jnhpd_factory,
            tmp_path,
            f"""
            release = threading.Event()

            {prefix}def check(name, value):
                if name == b"slow":
                    {wait}
                    return True
                if name == b"release":
                    release.set()
                return True

            jnhp.helper.run(check)
            """,
            children=1,
        )
        slow_client = jnhp.Client(server.addr, timeout=60)
        done = []
        import threading

        t = threading.Thread(target=lambda: done.append(slow_client.store("slow", "x")))
        t.start()
        fast = jnhp.Client(server.addr, timeout=30)
        for i in range(20):
            assert fast.store(f"fast{i}", "x") is True
        assert not done  # the slow one is still waiting
        assert fast.store("release", "x") is True
        t.join(60)
        assert done == [True]
        server.stop()


def test_huge_values_reach_the_check(jnhpd_factory, tmp_path):
    server = helper_server(
        jnhpd_factory,
        tmp_path,
        """
        def check(name, value):
            return len(value) == 16 * 1024 * 1024 and value == value[:1] * len(value)

        jnhp.helper.run(check, concurrency=2)
        """,
    )
    # Restart jnhpd with limits wide enough for a 16 MiB value.
    server.stop()
    config = (tmp_path / "jnhp.toml").read_text()
    server = jnhpd_factory("[server]\nmax_value_bytes = 16777216\n" + config)
    client = jnhp.Client(server.addr, timeout=60)
    assert client.store("big", b"z" * (16 * 1024 * 1024)) is True


def run_helper(body, stdin, timeout=30):
    """Runs a helper script directly on `stdin` bytes; (stdout, stderr, rc)."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    return proc.stdout, proc.stderr, proc.returncode


def test_each_id_is_answered_once_and_the_helper_exits_when_stdin_closes():
    for prefix in ("", "async "):
        body = f"""
            {prefix}def check(name, value):
                return value != b"no"
            jnhp.helper.run(check)
            """
        requests = b"".join(b"%d n%d %s\n" % (i, i, b"no" if i % 3 == 0 else b"yes") for i in range(300))
        out, err, rc = run_helper(body, requests)
        assert rc == 0, err
        replies = sorted(out.splitlines(), key=lambda l: int(l.split()[0]))
        assert replies == [b"%d JNHP:%d" % (i, 0 if i % 3 == 0 else 1) for i in range(300)]


def test_stdin_closed_mid_request_and_junk_lines():
    for prefix in ("", "async "):
        body = f"""
            {prefix}def check(name, value):
                return True
            jnhp.helper.run(check)
            """
        out, err, rc = run_helper(body, b"junk\n1 a b\n2 onlyname\n3 a half-writ")
        assert rc == 0, err
        assert sorted(out.splitlines()) == [b"1 JNHP:1", b"2 JNHP:error"]
        assert b"not a request line" in err
        assert b"middle of a request line" in err


def test_values_keep_their_spaces_and_bytes():
    out, err, rc = run_helper(
        """
        def check(name, value):
            return name == b"\\xff" and value == b"a  b \\x80 "
        jnhp.helper.run(check, concurrency=1)
        """,
        b"7 \xff a  b \x80 \n",
    )
    assert out == b"7 JNHP:1\n", err


def test_helper_against_a_closed_stdout_exits():
    # jnhpd killed as the helper writes: the helper must end, not spin.
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + "jnhp.helper.run(lambda n, v: True)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.close()
    try:
        for i in range(1000):
            proc.stdin.write(b"%d a b\n" % i)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    assert proc.wait(30) is not None


def test_a_check_that_hangs_is_timed_out_by_jnhpd_and_the_helper_replaced(jnhpd_factory, tmp_path):
    server = helper_server(
        jnhpd_factory,
        tmp_path,
        """
        def check(name, value):
            if name == b"hang":
                threading.Event().wait()
            return True

        jnhp.helper.run(check)
        """,
        timeout_ms=1000,
        children=1,
    )
    client = jnhp.Client(server.addr, timeout=30)
    assert client.store("hang", "x") is False
    assert client.store("after", "x") is True


def test_the_concurrency_limit_holds_for_threads_and_tasks():
    threads = """
        lock, running, most = threading.Lock(), [0], [0]
        barrier = threading.Barrier(3, timeout=20)

        def check(name, value):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            barrier.wait()  # three at once, or this raises
            with lock:
                running[0] -= 1
            return True

        jnhp.helper.run(check, concurrency=3)
        print("most", most[0], file=sys.stderr)
        """
    tasks = """
        running, most = [0], [0]

        async def check(name, value):
            running[0] += 1
            most[0] = max(most[0], running[0])
            for _ in range(100):  # let the others start, if they may
                await asyncio.sleep(0)
            running[0] -= 1
            return True

        jnhp.helper.run(check, concurrency=3)
        print("most", most[0], file=sys.stderr)
        """
    requests = b"".join(b"%d n v\n" % i for i in range(12))
    for body in (threads, tasks):
        out, err, rc = run_helper(body, requests)
        assert rc == 0, err
        assert len(out.splitlines()) == 12 and b"JNHP:error" not in out, err
        assert b"most 3\n" in err, err


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_helper_uses_no_cpu():
    # The watchdog that moves slow checks aside sleeps while no check runs.
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + "jnhp.helper.run(lambda n, v: True)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"1 a b\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"1 JNHP:1\n"
    time.sleep(1)  # past the watchdog's idle ticks (0.1 s)
    before = cpu_seconds(proc.pid)
    time.sleep(2)
    used = cpu_seconds(proc.pid) - before
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert used < 0.2, f"{used} s of CPU in 2 s idle"
