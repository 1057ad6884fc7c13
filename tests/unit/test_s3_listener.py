"""The S3 listener is a low-level aiohttp server (`gateway.app.create_s3_server`): every
request reaches `S3Server.handle` with no router, and each response is still stamped.

The real pipeline over a real `Cluster` (SQLite metadata, in-memory nodes), driven by boto3
and by raw HTTP on the socket.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from storage.cluster import Cluster
from storage.crypto.keys import FileRootKey
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config


@pytest.fixture
async def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    async def no_router(*_: Any) -> None:
        raise AssertionError("the S3 listener resolved a route")

    monkeypatch.setattr(web.UrlDispatcher, "resolve", no_router)
    cfg = sim_config(tmp_path, 1024)
    meta = await SqliteStore.open(tmp_path / "meta.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))  # type: ignore[arg-type]
    await tenants.load()
    await tenants.create("t")
    cred = await tenants.create_key("t")
    pool = ThreadPoolExecutor(2)
    cluster = Cluster.wire(cfg, meta, tenants, SimNodes(list(cfg.nodes)),  # type: ignore[arg-type]
                           pool, pool)
    try:
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as client:
            yield client
    finally:
        await meta.close()
        pool.shutdown()


def _raw(endpoint: str, request: bytes) -> bytes:
    host, port = endpoint.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        return s.recv(65536)


async def test_requests_are_served_and_stamped_without_a_router(s3: Any) -> None:
    def run() -> None:
        s3.create_bucket(Bucket="lst")
        put = s3.put_object(Bucket="lst", Key="dir/a b\n", Body=b"hello")
        assert put["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
        got = s3.get_object(Bucket="lst", Key="dir/a b\n")
        assert got["Body"].read() == b"hello"
        assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-id-2"] == "tessera"
        with pytest.raises(ClientError) as err:
            s3.get_object(Bucket="lst", Key="missing")
        meta = err.value.response["ResponseMetadata"]
        assert meta["HTTPStatusCode"] == 404
        assert meta["HTTPHeaders"]["x-amz-request-id"] == meta["RequestId"]
        s3.put_bucket_cors(Bucket="lst", CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": ["https://app.example"], "AllowedMethods": ["GET"]}]})

    await asyncio.to_thread(run)
    endpoint = s3.meta.endpoint_url
    head = await asyncio.to_thread(_raw, endpoint, (
        b"OPTIONS /lst/dir HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
        b"Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Access-Control-Allow-Origin: https://app.example" in head
    assert b"x-amz-request-id: " in head


async def test_expect_is_answered_only_after_authorization(s3: Any) -> None:
    await asyncio.to_thread(s3.create_bucket, Bucket="exp")
    head = await asyncio.to_thread(_raw, s3.meta.endpoint_url, (
        b"PUT /exp/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 403")  # anonymous: refused, no 100 Continue first
