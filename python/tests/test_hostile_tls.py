"""Hostile TLS tests of the Python clients (issue 25): every TLS mistake
is a jnhp.ConnectionError, sync and asyncio, never a raw ssl error."""

import asyncio
import shutil
import ssl

import pytest

import jnhp
import jnhp.asyncio

from test_tls import pki, tls_config  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


def both(addr, context, call, **kw):
    """Runs `call` (a name of a method) sync and asyncio; the exceptions."""
    errors = []
    try:
        getattr(jnhp.Client(addr, tls=context, timeout=5, **kw), call)("n")
    except BaseException as e:  # noqa: BLE001
        errors.append(e)

    async def main():
        async with jnhp.asyncio.Client(addr, tls=context, timeout=5, **kw) as c:
            await getattr(c, call)("n")

    try:
        asyncio.run(main())
    except BaseException as e:  # noqa: BLE001
        errors.append(e)
    return errors


def test_tls_mistakes_are_connection_errors(jnhpd_factory, pki):  # noqa: F811
    server = jnhpd_factory(tls_config(pki, mutual=True))
    good = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    good.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    port = server.tls_addr.rsplit(":", 1)[1]
    # The certificate names localhost and 127.0.0.1: both work.
    assert jnhp.Client(f"localhost:{port}", tls=good, timeout=5).exists("n") is False
    untrusted = ssl.create_default_context()
    no_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    cases = [
        ("wrong hostname", server.tls_addr, good, {"server_hostname": "evil.example"}),
        ("untrusted CA", server.tls_addr, untrusted, {}),
        ("no client certificate", server.tls_addr, no_cert, {}),
        ("TLS to the plain port", server.addr, good, {}),
    ]
    for what, addr, context, kw in cases:
        for call in ("exists", "get"):
            errors = both(addr, context, call, **kw)
            assert len(errors) == 2, (what, call, errors)
            for e in errors:
                assert isinstance(e, jnhp.ConnectionError), (what, call, repr(e))
    # And plain JNHP/1 to the TLS port: not JNHP/1 (or closed), a ConnectionError.
    for call in ("exists", "get"):
        errors = both(server.tls_addr, None, call)
        assert len(errors) == 2 and all(isinstance(e, jnhp.ConnectionError) for e in errors), errors
