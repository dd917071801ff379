"""jnhp.asyncio.Client against the real jnhpd."""

import asyncio

import pytest

import jnhp
import jnhp.asyncio


def run(coro):
    return asyncio.run(coro)


def test_store_exists_get(server):
    async def main():
        async with jnhp.asyncio.Client(server.addr, timeout=5) as client:
            assert await client.store("a", "hello") is True
            assert await client.store("a", "again") is False
            assert await client.exists("a") is True
            assert await client.exists("b") is False
            assert await client.get("a") == b"hello"
            assert await client.get("b") is None

    run(main())


def test_many_tasks_share_one_pipelined_connection(server):
    async def main():
        client = jnhp.asyncio.Client(server.addr)
        results = await asyncio.gather(*(client.store(f"n{i}", f"v{i}") for i in range(500)))
        assert results == [True] * 500
        values = await asyncio.gather(*(client.get(f"n{i}") for i in range(500)))
        assert values == [f"v{i}".encode() for i in range(500)]
        await client.close()

    run(main())


def test_pipeline_and_errors(jnhpd_factory):
    server = jnhpd_factory("[server]\nmax_value_bytes = 8\n")

    async def main():
        client = jnhp.asyncio.Client(server.addr)
        answers = await client.pipeline().store("a", "1").store("a", "2").get("a").exists("x").execute()
        assert answers == [True, False, b"1", False]
        with pytest.raises(jnhp.ServerError) as caught:
            await client.store("b", "123456789")
        assert caught.value.reason == "value too long"
        mixed = await client.pipeline().store("c", "123456789").get("a").execute(raise_on_error=False)
        assert isinstance(mixed[0], jnhp.ServerError) and mixed[1] == b"1"
        with pytest.raises(jnhp.InvalidRequest):
            await client.get("a b")
        assert await client.get("a") == b"1"
        await client.close()

    run(main())


def test_a_pipeline_of_large_values_does_not_deadlock(jnhpd_factory):
    server = jnhpd_factory("[server]\nmax_value_bytes = 1048576\n")

    async def main():
        client = jnhp.asyncio.Client(server.addr, timeout=30)
        big = b"v" * (1 << 20)
        assert await client.store("big", big)
        p = client.pipeline()
        for _ in range(64):
            p.get("big")
        assert await p.execute() == [big] * 64
        await client.close()

    run(main())


def test_connection_errors_and_reconnect(jnhpd_factory):
    server = jnhpd_factory("")

    async def main():
        client = jnhp.asyncio.Client(server.addr, timeout=5)
        assert await client.store("a", "1")
        server.stop()
        with pytest.raises(jnhp.ConnectionError):
            await client.get("a")
        with pytest.raises(jnhp.ConnectionError):
            await client.get("a")  # a new connection, refused
        await client.close()

    run(main())


def test_timeouts_cancellations_and_a_server_closing_mid_pipeline():
    from test_client import fake_server

    silent, l1 = fake_server(b"", requests_before=10**9)
    closing, l2 = fake_server(b"W00T!\r\n", requests_before=3)

    async def main():
        client = jnhp.asyncio.Client(silent, timeout=0.5)
        with pytest.raises(jnhp.TimeoutError):
            await client.get("a")
        # A cancelled call drops the connection: the next call opens
        # another rather than reading the cancelled call's reply. (Given
        # time enough to be cancelled, not to time out, on a busy machine.)
        client.timeout = 60
        task = asyncio.ensure_future(client.get("b"))
        for _ in range(10000):  # until its request is on the wire
            if client._conn is not None and client._conn.pending:
                break
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client._conn is None or client._conn.failed is not None
        await client.close()

        client = jnhp.asyncio.Client(closing, timeout=5)
        p = client.pipeline().store("a", "1").store("b", "2").store("c", "3")
        with pytest.raises(jnhp.ConnectionError):
            await p.execute()
        await client.close()

    run(main())
    l1.close()
    l2.close()
