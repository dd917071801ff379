"""jnhp.Client against the real jnhpd."""

import socket
import threading

import pytest

import jnhp


def test_store_exists_get(server):
    client = jnhp.Client(server.addr, timeout=5)
    assert client.store("greeting", "hello,   world") is True
    assert client.store(b"greeting", b"again") is False
    assert client.exists("greeting") is True
    assert client.exists("nobody") is False
    assert client.get("greeting") == b"hello,   world"
    assert client.get("nobody") is None


def test_names_and_values_as_str_are_utf8(server):
    client = jnhp.Client(server.addr)
    assert client.store("név", "érték ✓")
    assert client.get("név".encode()) == "érték ✓".encode()
    # Any byte the protocol allows goes through verbatim.
    assert client.store(b"\xff\xfe", b"\x01\x80 RARGH!")
    assert client.get(b"\xff\xfe") == b"\x01\x80 RARGH!"


def test_values_that_look_like_replies_are_values(server):
    client = jnhp.Client(server.addr)
    for i, value in enumerate([b"W00T!", b"RARGH!", b"AWESOME!", b"ERROR", b"ERRORS x"]):
        assert client.store(f"n{i}", value)
        assert client.get(f"n{i}") == value


def test_error_replies_raise_server_error_with_their_text(jnhpd_factory):
    server = jnhpd_factory("[server]\nmax_value_bytes = 8\n")
    client = jnhp.Client(server.addr)
    with pytest.raises(jnhp.ServerError) as caught:
        client.store("a", "123456789")
    assert caught.value.reason == "value too long"
    # The connection is still good.
    assert client.store("a", "1234") is True


def test_requests_the_server_would_misread_are_refused_before_sending(server):
    client = jnhp.Client(server.addr)
    for name, value in [
        ("a b", "x"),
        ("a\tb", "x"),
        ("", "x"),
        ("a", ""),
        ("a", " leading blank"),
        ("a", "two\nlines"),
        ("a", "cr\r"),
        ("a", "nul\0"),
        ("a", "ERROR not a value"),
        ("\udcff", "x"),
        ("a", "\ud800"),
    ]:
        with pytest.raises(jnhp.InvalidRequest):
            client.store(name, value)
    with pytest.raises(jnhp.InvalidRequest):
        client.get("a b")
    with pytest.raises(TypeError):
        client.get(12)  # type: ignore[arg-type]
    assert client.exists("a") is False  # nothing was stored by any of them
    assert issubclass(jnhp.InvalidRequest, ValueError)


def test_unreachable_server_raises_connection_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    client = jnhp.Client(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(jnhp.ConnectionError):
        client.get("a")
    with pytest.raises(ConnectionError):  # the builtin too
        client.store("a", "b")


def fake_server(replies: bytes, requests_before: int = 1):
    """A listener that reads `requests_before` lines, writes `replies` and
    closes; returns its address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while data.count(b"\n") < requests_before:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(replies)

    threading.Thread(target=serve, daemon=True).start()
    return "127.0.0.1:%d" % listener.getsockname()[1], listener


def test_a_server_that_closes_mid_pipeline_raises_connection_error():
    addr, listener = fake_server(b"W00T!\r\nRARGH!\r\n", requests_before=3)
    client = jnhp.Client(addr, timeout=5)
    p = client.pipeline()
    p.store("a", "1").store("b", "2").store("c", "3")
    with pytest.raises(jnhp.ConnectionError):
        p.execute()
    listener.close()


def test_a_reply_of_the_wrong_kind_or_too_long_raises_connection_error():
    addr, listener = fake_server(b"AWESOME!\r\n")
    with pytest.raises(jnhp.ConnectionError):
        jnhp.Client(addr).store("a", "b")
    listener.close()
    addr, listener = fake_server(b"x" * (17 << 20))
    with pytest.raises(jnhp.ConnectionError):
        jnhp.Client(addr).get("a")
    listener.close()


def test_a_silent_server_times_out():
    addr, listener = fake_server(b"", requests_before=10**9)
    client = jnhp.Client(addr, timeout=0.5)
    with pytest.raises(jnhp.TimeoutError):
        client.get("a")
    listener.close()


def test_pipeline_answers_in_order(server):
    client = jnhp.Client(server.addr)
    p = client.pipeline()
    for i in range(2000):
        p.store(f"k{i}", f"v{i}")
    p.store("k0", "again").exists("k1").exists("nope").get("k1999").get("nope")
    answers = p.execute()
    assert answers[:2000] == [True] * 2000
    assert answers[2000:] == [False, True, False, b"v1999", None]
    assert p.execute() == []


def test_pipeline_errors_are_raised_after_every_reply_or_returned(jnhpd_factory):
    server = jnhpd_factory("[server]\nmax_value_bytes = 8\n")
    client = jnhp.Client(server.addr)
    p = client.pipeline().store("a", "toolongvalue").store("b", "ok")
    with pytest.raises(jnhp.ServerError):
        p.execute()
    assert client.get("b") == b"ok"  # read on and stored
    answers = client.pipeline().store("c", "toolongvalue").get("b").execute(raise_on_error=False)
    assert isinstance(answers[0], jnhp.ServerError) and answers[0].reason == "value too long"
    assert answers[1] == b"ok"


def test_a_pipeline_of_large_values_does_not_deadlock(jnhpd_factory):
    # 64 MiB of replies to 64 pipelined GETs: far over what the server
    # buffers for a client that does not read (1 MiB).
    server = jnhpd_factory("[server]\nmax_value_bytes = 1048576\n")
    client = jnhp.Client(server.addr, timeout=30)
    big = b"v" * (1 << 20)
    assert client.store("big", big)
    p = client.pipeline()
    for _ in range(64):
        p.get("big")
    assert p.execute() == [big] * 64


def test_shared_between_threads(server):
    client = jnhp.Client(server.addr, pool_size=4)
    errors = []

    def work(t):
        try:
            for i in range(200):
                assert client.store(f"t{t}-{i}", f"{t}:{i}")
                assert client.get(f"t{t}-{i}") == f"{t}:{i}".encode()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(client._idle) <= 4


def test_a_connection_the_server_closed_is_replaced(jnhpd_factory):
    server = jnhpd_factory("[server]\nidle_timeout_secs = 1\n")
    client = jnhp.Client(server.addr)
    assert client.store("a", "1")
    # The pooled connection is closed by the server after 1 s idle: wait
    # until it is readable (the server's FIN), then use the client again.
    import select

    (conn,) = client._idle
    assert select.select([conn.sock], [], [], 30)[0]
    assert client.store("b", "2") is True
    assert client.get("a") == b"1"
