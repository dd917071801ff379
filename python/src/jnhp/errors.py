"""The exceptions every part of the package raises."""

import builtins


class Error(Exception):
    """Base class of every error this package raises."""


class ServerError(Error):
    """The server answered ``ERROR <reason>``; ``reason`` holds the text
    after ``ERROR `` (``"value too long"``, ``"storage unavailable"``).
    The connection stays usable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionError(Error, builtins.ConnectionError):
    """The server could not be reached, closed the connection, did not
    answer within the timeout, or answered something that is not JNHP/1.
    Whether a STORE sent before the failure was stored is not known (a
    later ``get`` tells)."""


class TimeoutError(ConnectionError, builtins.TimeoutError):
    """No reply within the client's timeout (a kind of ConnectionError)."""


class InvalidRequest(Error, ValueError):
    """The request cannot be sent as asked: a name with a blank or control
    byte, a value with CR, LF or NUL, starting with a blank or with
    ``ERROR ``, an empty name or value, or a ``str`` that is not valid
    UTF-8 (a lone surrogate). Nothing was sent."""
