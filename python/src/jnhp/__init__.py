"""jnhp: a client for jnhpd's JNHP/1 protocol, and a toolkit for its
validator helpers.

    import jnhp
    client = jnhp.Client("127.0.0.1:8111", timeout=5)
    client.store("greeting", "hello")      # True: stored (W00T!)
    client.get("greeting")                 # b"hello"

``jnhp.asyncio.Client`` is the same with coroutines; ``jnhp.helper.run``
turns a function into a persistent validator helper.
"""

from .client import Client, Pipeline
from .errors import ConnectionError, Error, InvalidRequest, ServerError, TimeoutError

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Pipeline",
    "Error",
    "ServerError",
    "ConnectionError",
    "TimeoutError",
    "InvalidRequest",
]
