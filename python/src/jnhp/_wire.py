"""JNHP/1 requests and replies as bytes (docs/protocol.md), shared by the
threaded and the asyncio clients."""

from typing import List, Optional, Tuple, TypeVar, Union

from .errors import ConnectionError, InvalidRequest, ServerError

Bytes = Union[bytes, bytearray, memoryview, str]

# The longest reply line read: the largest value any server may be
# configured to hold (16 MiB) and its line end. A longer line means the
# peer is not a JNHP/1 server.
MAX_REPLY = (16 << 20) + 2

# Bytes that may not appear in a name: blanks and ASCII controls.
_NAME_FORBIDDEN = frozenset(list(range(0x21)) + [0x7F])

STORE, EXISTS, GET = "STORE", "EXISTS", "GET"


def to_bytes(data: Bytes, what: str) -> bytes:
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"{what} is not valid UTF-8: {exc}") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or str, not {type(data).__name__}")


def check_name(name: bytes) -> None:
    if not name:
        raise InvalidRequest("empty name")
    if not _NAME_FORBIDDEN.isdisjoint(name):
        raise InvalidRequest(f"name {name!r} holds a blank or control byte")


def check_value(value: bytes) -> None:
    if not value:
        raise InvalidRequest("empty value (an empty GET reply means absent)")
    if value[0] in (0x20, 0x09):
        raise InvalidRequest("a value may not start with a blank")
    if b"\r" in value or b"\n" in value or b"\0" in value:
        raise InvalidRequest("a value may not hold CR, LF or NUL")
    if value.startswith(b"ERROR "):
        raise InvalidRequest("a value may not start with 'ERROR '")


def encode(command: str, name: Bytes, value: Optional[Bytes] = None) -> bytes:
    """The request line, checked so that the server reads back exactly
    this request (a blank in a name would silently change it)."""
    raw_name = to_bytes(name, "name")
    check_name(raw_name)
    if command == STORE:
        assert value is not None
        raw_value = to_bytes(value, "value")
        check_value(raw_value)
        return b"STORE " + raw_name + b" " + raw_value + b"\r\n"
    return command.encode() + b" " + raw_name + b"\r\n"


def decode(command: str, line: bytes) -> Union[bool, Optional[bytes], ServerError]:
    """The answer a reply line (with its line end) gives to `command`. An
    ``ERROR`` reply is returned, not raised, so a pipeline can read on."""
    if not line.endswith(b"\n"):
        if len(line) >= MAX_REPLY:
            raise ConnectionError("reply line too long: not a JNHP/1 server")
        raise ConnectionError("connection closed by the server before its reply")
    body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if body.startswith(b"ERROR "):
        return ServerError(body[6:].decode("utf-8", "replace"))
    if command == GET:
        return body or None
    yes = b"W00T!" if command == STORE else b"AWESOME!"
    if body == yes:
        return True
    if body == b"RARGH!":
        return False
    raise ConnectionError(f"unexpected reply to {command}: {body[:80]!r}")


def answer(command: str, line: bytes) -> Union[bool, Optional[bytes]]:
    """`decode`, raising a ServerError."""
    result = decode(command, line)
    if isinstance(result, ServerError):
        raise result
    return result


def results(
    commands: List[str], lines: List[bytes], raise_on_error: bool
) -> List[Union[bool, Optional[bytes], ServerError]]:
    out = [decode(c, l) for c, l in zip(commands, lines)]
    if raise_on_error:
        for r in out:
            if isinstance(r, ServerError):
                raise r
    return out


Request = Tuple[str, bytes]


R = TypeVar("R", bound="Requests")


class Requests:
    """The requests a pipeline collects, in order: the sync and asyncio
    pipelines differ only in how they send them (one place for both)."""

    def __init__(self) -> None:
        self._commands: List[str] = []
        self._lines: List[bytes] = []

    def store(self: R, name: Bytes, value: Bytes) -> R:
        return self._add(STORE, encode(STORE, name, value))

    def exists(self: R, name: Bytes) -> R:
        return self._add(EXISTS, encode(EXISTS, name))

    def get(self: R, name: Bytes) -> R:
        return self._add(GET, encode(GET, name))

    def _add(self: R, command: str, line: bytes) -> R:
        self._commands.append(command)
        self._lines.append(line)
        return self

    def __len__(self) -> int:
        return len(self._commands)

    def _take(self) -> Tuple[List[str], List[bytes]]:
        """The requests collected, which are forgotten here."""
        taken = (self._commands, self._lines)
        self._commands, self._lines = [], []
        return taken
