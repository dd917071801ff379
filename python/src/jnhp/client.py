"""The threaded client: a small pool of connections, safe to share
between threads."""

import select
import socket
import ssl
import threading
from typing import List, Optional, Tuple, Union

from . import _wire
from ._wire import EXISTS, GET, STORE, Bytes
from .errors import ConnectionError, ServerError, TimeoutError

Answer = Union[bool, Optional[bytes], ServerError]

# A pipeline is written in pieces of at most this many bytes (or one
# request, if longer), and the replies to a piece are read before the next
# is written: the server stops reading a client that has about 1 MiB of
# unread replies waiting (docs/protocol.md, "Bounded memory"), so writing a
# whole large pipeline before reading could block both sides.
PIPELINE_WRITE = 32 * 1024
# Replies after which the server closes the connection (protocol.md).
CLOSING = (b"ERROR too many connections\r", b"ERROR too many connections\n", b"ERROR shutting down\r", b"ERROR shutting down\n")


def split_addr(addr: Union[str, Tuple[str, int]]) -> Tuple[str, int]:
    """``"host:port"``, ``"[::1]:8111"`` or a ``(host, port)`` tuple."""
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {addr!r} is not host:port")
    return host.strip("[]"), int(port)


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=65536)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        return self.reader.readline(_wire.MAX_REPLY)

    def stale(self) -> bool:
        """Whether an idle connection has something to read: the server
        closed it (idle_timeout_secs, a restart) or it is out of step."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass


class Client:
    """A JNHP/1 client. ``addr`` is ``"host:port"`` (``"[::1]:8111"``) or a
    ``(host, port)`` tuple; ``timeout`` (seconds) bounds connecting and
    each reply; ``tls`` is an ``ssl.SSLContext`` (mutual TLS: load the
    client's certificate into it) and ``server_hostname`` the name checked
    against the server's certificate (default: the host of ``addr``).

    Calls from many threads share up to ``pool_size`` connections; a
    connection is opened when every open one is busy, and kept for reuse.
    """

    def __init__(
        self,
        addr: Union[str, Tuple[str, int]] = "127.0.0.1:8111",
        *,
        timeout: float = 5.0,
        tls: Optional[ssl.SSLContext] = None,
        server_hostname: Optional[str] = None,
        pool_size: int = 8,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be more than 0")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.host, self.port = split_addr(addr)
        self.timeout = timeout
        self.tls = tls
        self.server_hostname = server_hostname or self.host
        self._idle: List[_Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False

    # -- the three requests --------------------------------------------

    def store(self, name: Bytes, value: Bytes) -> bool:
        """STORE: True if stored (``W00T!``), False if not (``RARGH!``:
        the name is taken or a validator said no)."""
        return bool(self._call(STORE, _wire.encode(STORE, name, value), retry=False))

    def exists(self, name: Bytes) -> bool:
        """EXISTS: whether the name is stored."""
        return bool(self._call(EXISTS, _wire.encode(EXISTS, name), retry=True))

    def get(self, name: Bytes) -> Optional[bytes]:
        """GET: the value, or None if the name is absent."""
        result = self._call(GET, _wire.encode(GET, name), retry=True)
        assert result is None or isinstance(result, bytes)
        return result

    def pipeline(self) -> "Pipeline":
        """A batch of requests sent together; ``execute()`` answers them
        in order."""
        return Pipeline(self)

    def close(self) -> None:
        """Closes the idle connections; calls still running finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections ----------------------------------------------------

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.timeout:
            raise TimeoutError(f"cannot connect to {self.host}:{self.port}: timed out") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.server_hostname)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise ConnectionError(f"TLS with {self.host}:{self.port} failed: {exc}") from None
        return _Connection(sock)

    def _take(self) -> Tuple[_Connection, bool]:
        """A connection, and whether it was reused."""
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionError("client closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if conn.stale():
                conn.close()
                continue
            return conn, True

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _exchange(self, commands: List[str], chunks: List[bytes], counts: List[int]) -> List[bytes]:
        """Sends each chunk and reads its replies (``counts``) before the
        next, on one pooled connection; the reply lines in order."""
        if not self._slots.acquire(timeout=self.timeout):
            raise TimeoutError("no connection of the pool free within the timeout")
        try:
            conn, _ = self._take()
            lines: List[bytes] = []
            try:
                for chunk, count in zip(chunks, counts):
                    conn.send(chunk)
                    for _ in range(count):
                        line = conn.read_line()
                        # A cut or foreign reply raises here, before the
                        # connection could go back to the pool.
                        _wire.decode(commands[len(lines)], line)
                        lines.append(line)
            except socket.timeout:
                conn.close()
                raise TimeoutError(f"no reply within {self.timeout} s") from None
            except (OSError, ssl.SSLError) as exc:
                conn.close()
                raise ConnectionError(f"connection lost: {exc}") from None
            except BaseException:
                conn.close()
                raise
            if any(line.startswith(CLOSING) for line in lines):
                # The server closes the connection after these (it may not
                # have yet): reused, it would fail the next call.
                conn.close()
            else:
                self._give_back(conn)
            return lines
        finally:
            self._slots.release()

    def _call(self, command: str, line: bytes, *, retry: bool) -> Answer:
        try:
            reply = self._exchange([command], [line], [1])[0]
        except TimeoutError:
            raise
        except ConnectionError:
            # A GET or EXISTS may be asked again on a fresh connection
            # (the first may have been closed by the server as it was
            # taken); a STORE may not: it may have been stored.
            if not retry:
                raise
            reply = self._exchange([command], [line], [1])[0]
        return _wire.answer(command, reply)


class Pipeline(_wire.Requests):
    """Requests queued with ``store``/``exists``/``get`` and sent together
    by ``execute()``, which returns their answers in order (True/False,
    a value or None). With ``raise_on_error`` (the default) the first
    ``ERROR`` reply is raised as a ServerError once every reply is read;
    otherwise the ServerError takes its request's place in the list.

    Also a context manager: ``with client.pipeline() as p: ...`` discards
    what was not executed."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client

    def execute(self, raise_on_error: bool = True) -> List[Answer]:
        commands, lines = self._take()
        if not commands:
            return []
        chunks: List[bytes] = []
        counts: List[int] = []
        piece: List[bytes] = []
        size = 0
        for line in lines:
            if piece and size + len(line) > PIPELINE_WRITE:
                chunks.append(b"".join(piece))
                counts.append(len(piece))
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        chunks.append(b"".join(piece))
        counts.append(len(piece))
        replies = self._client._exchange(commands, chunks, counts)
        return _wire.results(commands, replies, raise_on_error)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self._take()
