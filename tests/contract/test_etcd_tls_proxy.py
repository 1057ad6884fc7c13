"""The etcd store's gRPC key calls trust what its JSON calls trust and go where they go:
an https member signed by a private CA named in SSL_CERT_FILE serves key calls (grpcio's
bundled roots would refuse it while leases and status still worked), and a proxy set in the
environment is not used (grpcio follows http_proxy; aiohttp never did)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from storage.metadata.etcd import EtcdStore
from tests.contract.conftest import session_tls
from tests.integration.cluster import free_port

ETCD = shutil.which("etcd")


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, subject)])).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(signer, hashes.SHA256())


def _pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A one-member etcd serving https with a certificate from a fresh private CA."""
    if ETCD is None:
        pytest.skip("etcd not installed")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tessera test CA")])
    ca = _cert("tessera test CA", ca_key, ca_name, ca_key, ca=True)
    cert = _cert("127.0.0.1", key, ca_name, ca_key, ca=False)
    ca_file = _pem(tmp_path / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    cert_file = _pem(tmp_path / "cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_file = _pem(tmp_path / "key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    client, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [ETCD, "--name", "t", "--data-dir", str(tmp_path / "data"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"t=http://127.0.0.1:{peer}",
         "--cert-file", cert_file, "--key-file", key_file],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "etcd.log", "wb"))
    try:
        deadline = time.monotonic() + 60
        while True:  # ready once its client port accepts connections
            try:
                socket.create_connection(("127.0.0.1", client), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "etcd.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "etcd did not start"
                time.sleep(0.05)
        yield url, ca_file
    finally:
        proc.kill()
        proc.wait()


async def _open_when_ready(endpoint: str) -> EtcdStore:
    """Open the store once the member has a leader (a fresh member elects itself)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await EtcdStore.open((endpoint,))
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_key_calls_trust_the_ca_in_ssl_cert_file(
        tls_etcd: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, ca_file = tls_etcd
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    store = await _open_when_ready(url)
    try:
        assert await store.put(b"tls/k", b"v") > 0
        got = await store.get(b"tls/k")
        assert got is not None and got.value == b"v"
    finally:
        await store.close()


@pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                    reason="no etcd cluster (etcd not installed)")
async def test_key_calls_ignore_a_proxy_in_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(200))  # a CONNECT never answered: the call would hang
        await reader.read()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("NO_PROXY", "")
    store = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), session_tls())
    try:
        assert await store.put(b"proxy/k", b"v") > 0
        got = await store.get(b"proxy/k")
        assert got is not None and got.value == b"v"
        assert seen == []
    finally:
        await store.close()
        server.close()
        await server.wait_closed()
