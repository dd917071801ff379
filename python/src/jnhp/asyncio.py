"""The asyncio client: one connection, pipelined: concurrent calls from
many tasks go out back to back and their replies are matched in order."""

import asyncio
import collections
import ssl
from typing import Any, Deque, List, Optional, Tuple, Union

from . import _wire
from ._wire import EXISTS, GET, STORE, Bytes
from .client import CLOSING, split_addr
from .errors import ConnectionError, ServerError, TimeoutError

Answer = Union[bool, Optional[bytes], ServerError]

__all__ = ["Client", "Pipeline"]


class Client:
    """The asyncio twin of :class:`jnhp.Client`: the same arguments and
    methods, as coroutines. One connection is opened on first use and
    shared by every task; requests are pipelined on it. A connection
    error, or a reply missing its ``timeout``, fails every request in
    flight on it; the next call connects again."""

    def __init__(
        self,
        addr: Union[str, Tuple[str, int]] = "127.0.0.1:8111",
        *,
        timeout: float = 5.0,
        tls: Optional[ssl.SSLContext] = None,
        server_hostname: Optional[str] = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be more than 0")
        self.host, self.port = split_addr(addr)
        self.timeout = timeout
        self.tls = tls
        self.server_hostname = server_hostname or self.host
        self._conn: Optional["_Connection"] = None
        self._connecting: Optional[asyncio.Lock] = None

    async def store(self, name: Bytes, value: Bytes) -> bool:
        return bool(await self._one(STORE, _wire.encode(STORE, name, value)))

    async def exists(self, name: Bytes) -> bool:
        return bool(await self._one(EXISTS, _wire.encode(EXISTS, name)))

    async def get(self, name: Bytes) -> Optional[bytes]:
        result = await self._one(GET, _wire.encode(GET, name))
        assert result is None or isinstance(result, bytes)
        return result

    def pipeline(self) -> "Pipeline":
        return Pipeline(self)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(ConnectionError("client closed"))

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connection(self) -> "_Connection":
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None or self._conn.failed is not None:
                try:
                    reader, writer = await _within(
                        asyncio.open_connection(
                            self.host,
                            self.port,
                            ssl=self.tls,
                            server_hostname=self.server_hostname if self.tls else None,
                            limit=_wire.MAX_REPLY,
                        ),
                        self.timeout,
                    )
                except asyncio.TimeoutError:
                    raise TimeoutError(f"cannot connect to {self.host}:{self.port}: timed out") from None
                except (OSError, ssl.SSLError) as exc:
                    raise ConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
                self._conn = _Connection(reader, writer)
            return self._conn

    async def _one(self, command: str, line: bytes) -> Answer:
        return _wire.answer(command, (await self._send([command], line))[0])

    async def _send(self, commands: List[str], data: bytes) -> List[bytes]:
        conn = await self._connection()
        futures = conn.send(commands, data)
        try:
            await _within(conn.drain(), self.timeout)
            return list(await _within(asyncio.gather(*futures), self.timeout))
        except asyncio.TimeoutError:
            error = TimeoutError(f"no reply within {self.timeout} s")
            await conn.close(error)
            raise error from None
        except asyncio.CancelledError:
            # The replies would arrive for nobody: the connection is out of
            # step with its callers, so it goes.
            await conn.close(ConnectionError("a request was cancelled"))
            raise


async def _within(awaitable: Any, timeout: Optional[float]) -> Any:
    """``asyncio.wait_for``, without its flaw before Python 3.12: a
    cancellation arriving as the awaited thing finishes was dropped (the
    call then ran on, to its own timeout), here it is raised."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task})
        raise asyncio.TimeoutError()
    return task.result()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: Deque[Tuple[str, "asyncio.Future[bytes]"]] = collections.deque()
        self.failed: Optional[ConnectionError] = None
        self.draining = asyncio.Lock()
        self.task = asyncio.ensure_future(self._read())

    def send(self, commands: List[str], data: bytes) -> List["asyncio.Future[bytes]"]:
        if self.failed is not None:
            raise self.failed
        loop = asyncio.get_running_loop()
        futures = []
        for command in commands:
            future: "asyncio.Future[bytes]" = loop.create_future()
            self.pending.append((command, future))
            futures.append(future)
        self.writer.write(data)
        return futures

    async def drain(self) -> None:
        # One drain at a time (concurrent drains fail on older Pythons).
        async with self.draining:
            try:
                await self.writer.drain()
            except (OSError, ssl.SSLError) as exc:
                self._fail(ConnectionError(f"connection lost: {exc}"))
        # A failure is not raised here: the replies read before it (an
        # `ERROR too many connections` then the close) are its requests'
        # answers, and the others fail with it.

    async def _read(self) -> None:
        try:
            while True:
                try:
                    line = await self.reader.readline()
                except asyncio.LimitOverrunError:
                    raise ConnectionError("reply line too long: not a JNHP/1 server") from None
                except ValueError:
                    raise ConnectionError("reply line too long: not a JNHP/1 server") from None
                if not line.endswith(b"\n"):
                    raise ConnectionError("connection closed by the server")
                if not self.pending:
                    raise ConnectionError(f"reply with no request: {line[:80]!r}")
                command, future = self.pending.popleft()
                try:
                    _wire.decode(command, line)  # a reply of another kind raises
                except ConnectionError as exc:
                    if not future.done():
                        future.set_exception(exc)
                    raise
                if not future.done():
                    future.set_result(line)
                if line.startswith(CLOSING):
                    # The server closes the connection after this reply: the
                    # next call must connect again, not write into it.
                    raise ConnectionError(f"closed by the server: {line.decode('utf-8', 'replace').strip()}")
        except ConnectionError as exc:
            self._fail(exc)
        except (OSError, ssl.SSLError) as exc:
            self._fail(ConnectionError(f"connection lost: {exc}"))

    def _fail(self, error: ConnectionError) -> None:
        if self.failed is None:
            self.failed = error
        while self.pending:
            _, future = self.pending.popleft()
            if not future.done():
                future.set_exception(self.failed)
                # Marked retrieved: its caller may be gone (cancelled).
                future.exception()
        self.writer.close()

    async def close(self, error: ConnectionError) -> None:
        self._fail(error)
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass


class Pipeline(_wire.Requests):
    """As :class:`jnhp.client.Pipeline`; ``await pipeline.execute()``
    writes every request at once and reads the replies as they come."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client

    async def execute(self, raise_on_error: bool = True) -> List[Answer]:
        commands, lines = self._take()
        if not commands:
            return []
        replies = await self._client._send(commands, b"".join(lines))
        return _wire.results(commands, replies, raise_on_error)
