"""Hostile tests of jnhp.helper (issue 25): driven over its stdin/stdout
directly (deterministic), and through the real jnhpd."""

import subprocess
import sys
import textwrap
import time

import pytest

import jnhp

from conftest import helper_config, write_script

PRELUDE = "import sys, time, asyncio, threading\nimport jnhp.helper\n"


def drive(body, stdin, timeout=20):
    """Runs a helper on `stdin` (then closed): (returncode, replies, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    replies = dict(line.split(b" ", 1) for line in proc.stdout.splitlines())
    assert len(replies) == len(proc.stdout.splitlines()), proc.stdout
    return proc.returncode, replies, proc.stderr.decode("utf-8", "replace")


BASE_EXCEPTIONS = """
class Custom(BaseException):
    pass

{prefix}def check(name, value):
    {pause}
    if value == b"ki":
        raise KeyboardInterrupt
    if value == b"se":
        raise SystemExit(0)
    if value == b"ge":
        raise GeneratorExit
    if value == b"be":
        raise Custom()
    if value == b"ce":
        raise asyncio.CancelledError()
    if value == b"one":
        return 1
    if value == b"str":
        return "yes"
    return True

jnhp.helper.run(check)
"""

KINDS = [b"ki", b"se", b"ge", b"be", b"ce", b"one", b"str"]
REQUESTS = b"".join(b"%d n %s\n" % (i, kind) for i, kind in enumerate(KINDS)) + b"99 n ok\n"
EXPECTED = {str(i).encode(): b"JNHP:error" for i in range(len(KINDS))} | {b"99": b"JNHP:1"}


@pytest.mark.parametrize("pause", ["pass", "time.sleep(0.02)"])
def test_a_plain_check_raising_any_base_exception_is_a_failure_of_that_request(pause):
    rc, replies, err = drive(BASE_EXCEPTIONS.format(prefix="", pause=pause), REQUESTS)
    assert rc == 0, err
    assert replies == EXPECTED, err


@pytest.mark.parametrize("pause", ["pass", "await asyncio.sleep(0.01)"])
def test_an_async_check_raising_any_base_exception_is_a_failure_of_that_request(pause):
    rc, replies, err = drive(BASE_EXCEPTIONS.format(prefix="async ", pause=pause), REQUESTS)
    assert rc == 0, err
    assert replies == EXPECTED, err


def test_through_jnhpd_an_async_check_cancelled_fails_only_its_store(jnhpd_factory, tmp_path):
    script = write_script(
        tmp_path,
        "cancel.py",
        PRELUDE
        + textwrap.dedent(
            """
            async def check(name, value):
                if value == b"cancel":
                    asyncio.current_task().cancel()
                    await asyncio.sleep(60)
                return True

            jnhp.helper.run(check)
            """
        ),
    )
    server = jnhpd_factory(helper_config(script, timeout_ms=30000, children=1))
    client = jnhp.Client(server.addr, timeout=10)
    assert client.store("warm", "x") is True
    started = time.monotonic()
    assert client.store("c", "cancel") is False  # on_failure = "reject"
    assert time.monotonic() - started < 5
    assert client.store("after", "x") is True


def test_odd_values_reach_the_check_byte_for_byte():
    value = b"b\x0bc\x85\xe2\x80\xa8d\x0c\x1c\x1d\x1ee \t\xff\xfe trailing  "
    body = f"""
    def check(name, value):
        return name == b"\\xff\\x80n" and value == {value!r}

    jnhp.helper.run(check)
    """
    rc, replies, err = drive(body, b"7 \xff\x80n " + value + b"\n")
    assert (rc, replies) == (0, {b"7": b"JNHP:1"}), err


def test_prints_and_stdout_writes_in_checks_never_reach_the_protocol():
    body = """
    def check(name, value):
        print("1 JNHP:1")
        sys.stdout.write("2 JNHP:0\\n")
        sys.stdout.flush()
        print("to stdout by name", file=sys.stdout)
        return False

    async def acheck(name, value):
        print("3 JNHP:1", flush=True)
        return True

    jnhp.helper.run(acheck if len(sys.argv) > 1 else check)
    """
    rc, replies, err = drive(body, b"42 n v\n43 n v\n")
    assert rc == 0
    assert replies == {b"42": b"JNHP:0", b"43": b"JNHP:0"}
    assert "1 JNHP:1" in err and "2 JNHP:0" in err


def test_thousands_of_slow_checks_stay_within_concurrency():
    body = """
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "threads": 0}

    def check(name, value):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            state["threads"] = max(state["threads"], threading.active_count())
        time.sleep(0.01)
        with lock:
            state["now"] -= 1
        return True

    jnhp.helper.run(check, concurrency=8)
    print("MOST", state["most"], state["threads"], file=sys.stderr)
    """
    n = 1000
    rc, replies, err = drive(body, b"".join(b"%d n v\n" % i for i in range(n)), timeout=60)
    assert rc == 0, err
    assert len(replies) == n
    most, threads = map(int, err.split("MOST ")[1].split())
    assert most <= 8
    assert threads <= 8 + 3  # checks, reader, watchdog, main


def test_junk_lines_giant_lines_and_a_partial_last_line():
    body = """
    def check(name, value):
        return len(value) in (1, 16 * 1024 * 1024)

    jnhp.helper.run(check)
    """
    junk = b"abc\n\n-4 n v\n+5 n v\n 6 n v\n\xff\xfe x y\n"
    big = b"1 n " + b"x" * (16 * 1024 * 1024) + b"\n"
    rc, replies, err = drive(body, junk + big + b"2 n v\n3 n partial")
    assert rc == 0, err
    assert replies == {b"1": b"JNHP:1", b"2": b"JNHP:1"}
    assert "not a request line" in err
