"""TLS and mutual TLS through ssl.SSLContext (certificates made with the
openssl command)."""

import shutil
import ssl
import subprocess

import pytest

import jnhp
import jnhp.asyncio

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path):
    d = tmp_path
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                "-keyout", f"{who}.key", "-out", f"{who}.csr", cwd=d)
        (d / f"{who}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{who}.pem", "-extfile", f"{who}.ext", cwd=d)
    return d


def tls_config(pki, mutual):
    config = (
        "[tls]\nlisten = [\"127.0.0.1:0\"]\n"
        f"cert_file = \"{pki / 'server.pem'}\"\nkey_file = \"{pki / 'server.key'}\"\n"
    )
    if mutual:
        config += f"client_ca_file = \"{pki / 'ca.pem'}\"\n"
    return config


def test_tls(jnhpd_factory, pki):
    server = jnhpd_factory(tls_config(pki, mutual=False))
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client = jnhp.Client(server.tls_addr, tls=context)
    assert client.store("a", "over tls") is True
    assert client.get("a") == b"over tls"
    assert client.pipeline().exists("a").get("a").execute() == [True, b"over tls"]
    # A context that does not trust the server's CA fails to connect.
    with pytest.raises(jnhp.ConnectionError):
        jnhp.Client(server.tls_addr, tls=ssl.create_default_context()).get("a")


def test_mutual_tls_sync_and_asyncio(jnhpd_factory, pki):
    import asyncio

    server = jnhpd_factory(tls_config(pki, mutual=True))
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    assert jnhp.Client(server.tls_addr, tls=context).store("m", "mutual") is True

    async def main():
        async with jnhp.asyncio.Client(server.tls_addr, tls=context) as client:
            assert await client.get("m") == b"mutual"

    asyncio.run(main())
    # Without a client certificate the server refuses the handshake.
    bare = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with pytest.raises(jnhp.ConnectionError):
        jnhp.Client(server.tls_addr, tls=bare, timeout=5).get("m")
