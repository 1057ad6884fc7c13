"""etcd members accept only clients showing a certificate from the cluster CA (mutual TLS):
without one, a client that can reach a member's port can neither list nor delete metadata
(atk22 listed every key with plain curl). Tessera's own client shows it and is served."""

from __future__ import annotations

import json
import os
import ssl
import urllib.request

import grpc
import pytest

from storage.metadata.etcd import EtcdError, EtcdStore
from storage.metadata.etcdpb import etcd_wire_pb2 as pb
from tests.contract.conftest import session_tls

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_TLS_DIR"),
                                reason="needs the contract session's etcd (mutual TLS)")

RANGE_ALL = b'{"key":"AA==","range_end":"AA==","keys_only":true}'  # every key, as atk22 sent


def _endpoints() -> tuple[str, ...]:
    return tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(","))


def _range_all(url: str, ctx: ssl.SSLContext | None) -> int:
    req = urllib.request.Request(f"{url}/v3/kv/range", data=RANGE_ALL, method="POST")
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        return int(r.status)


def test_members_serve_https_only() -> None:
    assert all(e.startswith("https://") for e in _endpoints())
    for ep in _endpoints():  # the same port spoken to in plain http: no answer
        with pytest.raises(OSError):
            _range_all(ep.replace("https://", "http://"), None)


def test_json_gateway_refuses_a_client_without_certificate() -> None:
    tls = session_tls()
    assert tls is not None
    trusting = ssl.create_default_context(cafile=str(tls.ca_file))  # trusts the members
    for ep in _endpoints():
        # refused in the handshake: a bad-certificate alert, or the connection closed
        # (which of the two arrives first depends on the TLS 1.3 timing, not on us)
        with pytest.raises(OSError):
            _range_all(ep, trusting)
        assert _range_all(ep, tls.ssl_context()) == 200  # the cluster's client cert: served


def test_grpc_refuses_a_client_without_certificate() -> None:
    tls = session_tls()
    assert tls is not None
    target = _endpoints()[0].split("://", 1)[1]
    req = pb.DeleteRangeRequest(key=b"\0", range_end=b"\0")  # would delete every key
    no_cert = grpc.ssl_channel_credentials(tls.ca_file.read_bytes())
    with grpc.secure_channel(target, no_cert) as ch:
        call = ch.unary_unary("/etcdserverpb.KV/DeleteRange",
                              request_serializer=pb.DeleteRangeRequest.SerializeToString,
                              response_deserializer=pb.DeleteRangeResponse.FromString)
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed


async def test_store_without_certificate_is_refused_with_it_served(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tls = session_tls()
    assert tls is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))  # it trusts the members, but
    with pytest.raises(EtcdError, match="no etcd endpoint answered"):
        await EtcdStore.open(_endpoints())  # shows no client certificate: refused
    monkeypatch.delenv("SSL_CERT_FILE")
    store = await EtcdStore.open(_endpoints(), session_tls())
    try:
        assert store.server_version
    finally:
        await store.close()


def test_key_files_are_private() -> None:
    tls = session_tls()
    assert tls is not None
    assert os.stat(tls.key_file).st_mode & 0o077 == 0
    assert os.stat(tls.key_file.with_name("member.key")).st_mode & 0o077 == 0
    assert os.stat(tls.key_file.with_name("ca.key")).st_mode & 0o077 == 0


def _peer_urls(tls_ctx: ssl.SSLContext) -> list[str]:
    req = urllib.request.Request(f"{_endpoints()[0]}/v3/cluster/member/list", data=b"{}",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10, context=tls_ctx) as r:
        return [u for m in json.loads(r.read())["members"] for u in m["peerURLs"]]


def test_peer_port_refuses_the_client_certificate() -> None:
    """review22h: the client certificate (every gateway holds it) is not a member's: the
    peer (Raft) port refuses it, so a gateway host cannot join Raft traffic; a member's is
    served."""
    tls = session_tls()
    assert tls is not None
    peers = _peer_urls(tls.ssl_context())
    assert peers and all(u.startswith("https://") for u in peers)
    member = ssl.create_default_context(cafile=str(tls.ca_file))
    member.load_cert_chain(str(tls.ca_file.with_name("member.pem")),
                           str(tls.ca_file.with_name("member.key")))
    for url in peers:
        with urllib.request.urlopen(f"{url}/members", timeout=10, context=member) as r:
            assert r.status == 200  # a member's certificate: served
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/members", timeout=10, context=tls.ssl_context())
