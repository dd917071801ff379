"""Hostile tests of jnhp.Client / jnhp.asyncio.Client (issue 25)."""

import asyncio
import signal
import socket
import threading
import time

import pytest

import jnhp
import jnhp.asyncio

from conftest import helper_config, write_script

SLOW_HELPER = """
import sys, time
import jnhp.helper

def check(name, value):
    if name.startswith(b"slow"):
        time.sleep(1.5)
    return True

jnhp.helper.run(check)
"""


def slow_server(jnhpd_factory, tmp_path):
    script = write_script(tmp_path, "slow.py", SLOW_HELPER)
    return jnhpd_factory(helper_config(script, timeout_ms=20000))


ODD = [
    b"a\x0bb",  # vertical tab
    b"a\x0cb",  # form feed
    b"a\x1cb\x1db\x1eb",  # separators str.splitlines() splits on
    b"a\x85b",  # NEL in latin-1
    "a\u2028b\u2029c".encode(),  # line/paragraph separators
    b"ERROR",  # ordinary value (protocol.md)
    b"ERRORS x",
    b"error x",
    b"trailing blanks  \t ",
    b"\xff\xfe\x80 not utf-8",
    b"W00T!",
    b"RARGH!",
]


def test_odd_bytes_round_trip_sync_pipeline_and_asyncio(server):
    client = jnhp.Client(server.addr, timeout=10)
    for i, value in enumerate(ODD):
        assert client.store(f"odd{i}", value) is True
        assert client.get(f"odd{i}") == value
    names = [f"odd{i}" for i in range(len(ODD))]
    p = client.pipeline()
    for n in names:
        p.get(n)
    assert p.execute() == ODD

    async def main():
        async with jnhp.asyncio.Client(server.addr, timeout=10) as ac:
            got = await asyncio.gather(*(ac.get(n) for n in names))
            assert list(got) == ODD
            p = ac.pipeline()
            for n in names:
                p.get(n)
            assert await p.execute() == ODD

    asyncio.run(main())


def test_names_with_odd_but_allowed_bytes(server):
    client = jnhp.Client(server.addr, timeout=10)
    for name in [b"\xff\xfe", "\u00a0nbsp", "\u2028", b"\x80", "x" * 250]:
        assert client.store(name, "v") is True
        assert client.get(name) == b"v"
    for name in [b"a\x7fb", "a\x00", "a b", "a\tb", "", "\udcff", b"a\rb"]:
        with pytest.raises(jnhp.InvalidRequest):
            client.store(name, "v")
    for value in ["", " x", "\tx", "a\rb", "a\nb", "a\x00b", "ERROR x", "\ud800"]:
        with pytest.raises(jnhp.InvalidRequest):
            client.store("n", value)
    assert client.get("n") is None
    # Over the limits: clear ServerErrors, connection still usable.
    with pytest.raises(jnhp.ServerError) as e:
        client.store("x" * 251, "v")
    assert e.value.reason == "name too long"
    with pytest.raises(jnhp.ServerError) as e:
        client.store("big", "v" * 65537)
    assert e.value.reason == "value too long"
    assert client.exists("odd") is False


def test_an_invalid_request_in_a_pipeline_sends_nothing(server):
    client = jnhp.Client(server.addr, timeout=10)
    with pytest.raises(jnhp.InvalidRequest):
        client.pipeline().store("p1", "x").store("p2", "bad\nSTORE p3 injected").store("p4", "y").execute()
    assert client.exists("p1") is False
    assert client.exists("p3") is False
    assert client.exists("p4") is False


def test_pipeline_after_an_error_and_then_plain_calls(server):
    client = jnhp.Client(server.addr, timeout=10, pool_size=1)
    p = client.pipeline().store("e1", "x").store("e2", "v" * 70000).get("e1").exists("e2")
    with pytest.raises(jnhp.ServerError):
        p.execute()
    assert client.get("e1") == b"x"
    got = client.pipeline().store("e3", "v" * 70000).get("e1").execute(raise_on_error=False)
    assert isinstance(got[0], jnhp.ServerError) and got[1] == b"x"
    assert client.exists("e1") is True


def test_a_pipeline_of_100k_requests(server):
    client = jnhp.Client(server.addr, timeout=30)
    p = client.pipeline()
    for i in range(50_000):
        p.store(f"k{i}", f"v{i}")
        p.get(f"k{i}")
    t = time.monotonic()
    got = p.execute()
    assert len(got) == 100_000
    assert got[0::2] == [True] * 50_000
    assert got[1::2] == [f"v{i}".encode() for i in range(50_000)]
    assert time.monotonic() - t < 40


def test_a_timed_out_call_never_hands_its_reply_to_another_thread(jnhpd_factory, tmp_path):
    server = slow_server(jnhpd_factory, tmp_path)
    client = jnhp.Client(server.addr, timeout=0.5, pool_size=1)
    assert client.store("plain", "p") is True
    with pytest.raises(jnhp.TimeoutError):
        client.store("slow1", "s")
    # The late W00T! for slow1 must not be read as the answer to these.
    results = []

    def worker():
        c = []
        for _ in range(5):
            c.append(client.get("plain"))
            c.append(client.exists("nothing"))
        results.append(c)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    time.sleep(1.6)  # the late W00T! has surely been sent by now
    client2_answers = [client.get("plain") for _ in range(3)]
    assert all(r == [b"p", False] * 5 for r in results), results
    assert client2_answers == [b"p"] * 3


def test_an_exception_raised_in_a_call_by_a_signal_drops_its_connection(jnhpd_factory, tmp_path):
    """A KeyboardInterrupt (here from a signal handler) while a STORE waits
    for its reply: the connection must not return to the pool with the
    reply still to come."""
    server = slow_server(jnhpd_factory, tmp_path)
    client = jnhp.Client(server.addr, timeout=10, pool_size=1)
    assert client.store("plain", "p") is True

    class Interrupted(Exception):
        pass

    def raise_(*_):
        raise Interrupted()

    old = signal.signal(signal.SIGALRM, raise_)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            client.store("slow2", "s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    time.sleep(2)  # the slow W00T! has been sent by now
    assert client.exists("absent") is False
    assert client.get("plain") == b"p"


def test_asyncio_cancelled_call_does_not_shift_replies(jnhpd_factory, tmp_path):
    server = slow_server(jnhpd_factory, tmp_path)

    async def main():
        async with jnhp.asyncio.Client(server.addr, timeout=10) as c:
            assert await c.store("plain", "p") is True
            task = asyncio.ensure_future(c.store("slow3", "s"))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(5):
                assert await c.exists("absent") is False
                assert await c.get("plain") == b"p"
            await asyncio.sleep(1.6)
            assert await c.exists("absent") is False
            assert await c.get("plain") == b"p"
            # wait_for timing out around a call is a cancellation too
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.store("slow4", "s"), 0.3)
            assert await c.exists("absent") is False
            await asyncio.sleep(1.6)
            assert await c.get("plain") == b"p"
            assert await c.exists("absent2") is False

    asyncio.run(main())


class FakeServer:
    """A one-shot TCP server replying with given bytes to each line."""

    def __init__(self, replies, close_after=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.replies = list(replies)
        self.received = []
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            f = conn.makefile("rb")
            while self.replies:
                line = f.readline()
                if not line:
                    break
                self.received.append(line)
                reply = self.replies.pop(0)
                if reply is None:
                    break
                conn.sendall(reply)
                if not reply.endswith(b"\n"):
                    break  # a reply cut short: the server closes mid-reply
            f.close()
            conn.close()


@pytest.mark.parametrize(
    "reply",
    [b"W00", b"W00T!W00T!\n", b"AWESOME!\n", b"\n", b"w00t!\n", b"\xff\n"],
)
def test_a_store_answered_with_garbage_or_cut_short_is_a_connection_error(reply):
    fake = FakeServer([reply, None])
    client = jnhp.Client(fake.addr, timeout=3)
    with pytest.raises(jnhp.ConnectionError):
        client.store("a", "b")


def test_a_store_is_never_retried_after_the_server_closes():
    fake = FakeServer([b"AWESOME!\n", None, b"W00T!\n"])
    client = jnhp.Client(fake.addr, timeout=3, pool_size=1)
    assert client.exists("a") is True
    with pytest.raises(jnhp.ConnectionError):
        client.store("a", "b")
    assert [l for l in fake.received if l.startswith(b"STORE")] == [b"STORE a b\r\n"]


class SilentServer:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return


def test_asyncio_a_cancellation_is_never_swallowed():
    """Cancelled after any number of turns of the loop, a call is
    cancelled at once: not left to run to its own timeout (Python < 3.12's
    asyncio.wait_for returns an inner result it finds done and drops the
    cancellation)."""
    silent = SilentServer()

    async def main():
        for turns in range(12):
            client = jnhp.asyncio.Client(silent.addr, timeout=3)
            task = asyncio.ensure_future(client.get("b"))
            for _ in range(turns):
                await asyncio.sleep(0)
            started = time.monotonic()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except jnhp.TimeoutError:
                pytest.fail(f"cancelled after {turns} turns, the call ran on to its timeout")
            assert time.monotonic() - started < 2, turns
            await client.close()
            # And the user's own wait_for around a call is honoured.
            client = jnhp.asyncio.Client(silent.addr, timeout=3)
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.exists("x"), 0.001 * turns)
            assert time.monotonic() - started < 2, turns
            await client.close()

    asyncio.run(main())


def test_many_threads_with_timeouts_never_get_each_others_replies(jnhpd_factory, tmp_path):
    """32 threads share a pool of 2; some calls time out on slow STOREs:
    every answer is still the caller's own."""
    server = slow_server(jnhpd_factory, tmp_path)
    client = jnhp.Client(server.addr, timeout=0.4, pool_size=2)
    wrong = []

    def worker(t):
        for i in range(20):
            name = f"t{t}-{i}"
            try:
                if t % 8 == 0 and i % 10 == 0:
                    client.store(f"slow-{name}", "s")  # times out
                    continue
                if client.store(name, name) is not True:
                    wrong.append((name, "store"))
                got = client.get(name)
                if got != name.encode():
                    wrong.append((name, got))
                if client.exists(name + "-absent") is not False:
                    wrong.append((name, "exists"))
            except jnhp.TimeoutError:
                pass  # waited for a pooled connection or a reply too long

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not wrong, wrong[:10]


def test_asyncio_errors_among_many_tasks_stay_with_their_tasks(server):
    async def one(ac, i):
        if i % 7 == 0:
            with pytest.raises(jnhp.ServerError) as e:
                await ac.store(f"k{i}", "v" * 65537)
            return e.value.reason
        assert await ac.store(f"k{i}", f"v{i}") is True
        return await ac.get(f"k{i}")

    async def main():
        async with jnhp.asyncio.Client(server.addr, timeout=20) as ac:
            got = await asyncio.gather(*(one(ac, i) for i in range(300)))
        for i, answer in enumerate(got):
            assert answer == ("value too long" if i % 7 == 0 else f"v{i}".encode()), i

    asyncio.run(main())
