"""More hostile tests of the Python client (issue 25): limits, refused
connections, TLS mistakes."""

import asyncio
import shutil
import socket
import ssl
import threading
import time

import pytest

import jnhp
import jnhp.asyncio

BIG = 16 * 1024 * 1024


def test_a_16_mib_value_round_trips_sync_and_asyncio(jnhpd_factory):
    server = jnhpd_factory(f"[server]\nmax_value_bytes = {BIG}\n")
    value = b"v" * (BIG - 1) + b"!"
    client = jnhp.Client(server.addr, timeout=30)
    assert client.store("big", value) is True
    assert client.get("big") == value
    assert client.pipeline().get("big").exists("big").execute() == [value, True]

    async def main():
        async with jnhp.asyncio.Client(server.addr, timeout=30) as ac:
            assert await ac.store("big2", value) is True
            assert await ac.get("big") == value
            assert await ac.pipeline().get("big2").get("nope").execute() == [value, None]

    asyncio.run(main())


def hold_the_only_slot(addr):
    host, port = addr.rsplit(":", 1)
    holder = socket.create_connection((host, int(port)))
    holder.sendall(b"EXISTS x\n")
    assert holder.recv(100).startswith(b"RARGH!")
    return holder


class ClosingAfterError:
    """A server whose first connection answers `ERROR too many
    connections` on accept and closes it 0.3 s later (as a busy jnhpd
    may: the close comes after the line); later connections answer W00T!."""

    def __init__(self, reason=b"too many connections"):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.reason = reason
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            self.connections += 1
            if self.connections == 1:
                conn.sendall(b"ERROR " + self.reason + b"\r\n")
                threading.Timer(0.3, conn.close).start()
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn, conn.makefile("rb") as f:
            for _ in f:
                conn.sendall(b"W00T!\r\n")


@pytest.mark.parametrize("reason", [b"too many connections", b"shutting down"])
def test_a_connection_refused_with_an_error_is_not_pooled(reason):
    fake = ClosingAfterError(reason)
    client = jnhp.Client(fake.addr, timeout=5, pool_size=1)
    with pytest.raises(jnhp.ServerError) as refused:
        client.store("a", "1")
    assert refused.value.reason == reason.decode()
    assert client.store("a", "1") is True
    assert fake.connections == 2


@pytest.mark.parametrize("reason", [b"too many connections", b"shutting down"])
def test_asyncio_a_connection_refused_with_an_error_is_not_reused(reason):
    fake = ClosingAfterError(reason)

    async def main():
        async with jnhp.asyncio.Client(fake.addr, timeout=5) as ac:
            with pytest.raises(jnhp.ServerError) as refused:
                await ac.store("a", "1")
            assert refused.value.reason == reason.decode()
            assert await ac.store("a", "1") is True
            assert fake.connections == 2

    asyncio.run(main())


def test_too_many_connections_is_a_server_error(jnhpd_factory):
    server = jnhpd_factory("[server]\nmax_connections = 1\n")
    holder = hold_the_only_slot(server.addr)
    client = jnhp.Client(server.addr, timeout=10, pool_size=1)
    with pytest.raises(jnhp.ServerError) as refused:
        client.store("a", "1")
    assert refused.value.reason == "too many connections"
    holder.close()


def test_asyncio_too_many_connections_is_a_server_error(jnhpd_factory):
    server = jnhpd_factory("[server]\nmax_connections = 1\n")

    async def main():
        holder = hold_the_only_slot(server.addr)
        async with jnhp.asyncio.Client(server.addr, timeout=10) as ac:
            with pytest.raises(jnhp.ServerError) as refused:
                await ac.store("a", "1")
            assert refused.value.reason == "too many connections"
            holder.close()
            for _ in range(200):
                try:
                    assert await ac.store("a", "1") is True
                    break
                except jnhp.ServerError as e:
                    assert e.reason == "too many connections"
                    await asyncio.sleep(0.02)
            assert await ac.get("a") == b"1"

    asyncio.run(main())


def test_bad_addresses_and_arguments_are_clear(server):
    for addr in ["127.0.0.1", "127.0.0.1:", "127.0.0.1:notaport", "127.0.0.1:99999", ""]:
        with pytest.raises((ValueError, jnhp.ConnectionError)):
            jnhp.Client(addr, timeout=2).exists("x")
    host, port = server.addr.rsplit(":", 1)
    assert jnhp.Client(f"localhost:{port}", timeout=5).exists("x") is False
