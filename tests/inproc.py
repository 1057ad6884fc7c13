"""An S3 gateway served in the test's own event loop over a wired `Cluster`, with a boto3
client for it: for tests that count what the request path does to the metadata store
(reads, round trips, compares) without child processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from aiohttp import web
from botocore.exceptions import ClientError

from gateway.app import s3_runner
from gateway.metrics import Metrics
from gateway.s3.server import S3Server
from ops.botoconfig import no_retries
from ops.localports import free_port
from storage.cluster import Cluster
from storage.config import Config, config_from_mapping
from storage.crypto.keys import FileRootKey
from storage.metadata import MetadataStore
from storage.metadata.sqlite import SqliteStore
from storage.shards.transport import NodeTransport
from storage.tenants import TenantService


async def no_locks() -> float:
    """The lock clock for a call on a store without Object Lock buckets, where a retention
    is never judged (`object_lock.shred_blocker` asks it only at an Object Lock bucket)."""
    raise AssertionError("the lock clock was asked: the test has an Object Lock bucket")


def error_code(call: Any, **kw: Any) -> str | None:
    """The S3 error code `call(**kw)` (a boto3 method) is refused with; None if it succeeds."""
    try:
        call(**kw)
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    return None


def in_thread(s3: Any) -> Callable[..., Awaitable[Any]]:
    """`call(name, **kw)`: boto3 method `name` of `s3` run in a thread, so that a gateway
    served in this event loop can answer it."""
    def call(name: str, **kw: Any) -> Awaitable[Any]:
        return asyncio.to_thread(getattr(s3, name), **kw)
    return call


def sim_config(data: Path, inline_max_bytes: int) -> Config:
    """Nine simulated nodes in three zones, 4+2: the layout the request-path tests serve."""
    nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
              "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
    return config_from_mapping({"data_dir": str(data),
                                "cluster": {"inline_max_bytes": inline_max_bytes},
                                "profiles": {"standard": {"k": 4, "m": 2}}, "nodes": nodes},
                               data)


@contextlib.asynccontextmanager
async def served_s3(cluster: Cluster, cfg: Config, access_key: str,
                    secret_key: str) -> AsyncIterator[Any]:
    """A boto3 S3 client (path style, no retries) for the cluster served on a free port."""
    runner = s3_runner(S3Server(cluster, cfg.gateway, Metrics()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                           aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                           region_name="us-east-1",
                           config=no_retries(s3={"addressing_style": "path"}))
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def wired_cluster(data: Path, cfg: Config, nodes: NodeTransport,
                        meta: MetadataStore | None = None,
                        tenant: str = "t", stall_s: float | None = None,
                        ) -> AsyncIterator[Cluster]:
    """A `Cluster` over `nodes` (simulated ones, say) with SQLite metadata in `data` (or
    `meta`, which the caller closes) and tenant `tenant`, in the test's own event loop;
    `stall_s` the shard write stall limit (default the StripeStore's)."""
    store = meta or await SqliteStore.open(data / "meta.db")
    tenants = TenantService(store, FileRootKey(data / "root.key"))
    await tenants.load()
    await tenants.create(tenant)
    pool = ThreadPoolExecutor(2)
    try:
        yield Cluster.wire(cfg, store, tenants, nodes, pool, pool, stall_s=stall_s)
    finally:
        if meta is None:
            await store.close()
        pool.shutdown()


@contextlib.asynccontextmanager
async def sim_cluster_s3(data: Path, cfg: Config, nodes: NodeTransport,
                         bucket: str) -> AsyncIterator[tuple[Cluster, Any]]:
    """The wired `Cluster` over `nodes` (SQLite metadata in `data`, tenant "t", `bucket`
    created) and a boto3 client for the gateway serving it: for tests that write through
    S3 and then read or damage what the cluster holds."""
    async with wired_cluster(data, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", bucket)
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            yield cluster, s3


@contextlib.asynccontextmanager
async def sim_s3(data: Path, cfg: Config, nodes: NodeTransport,
                 bucket: str) -> AsyncIterator[Any]:
    """A boto3 client for a gateway over `nodes` (simulated ones, say) with SQLite metadata
    in `data`, tenant "t" and `bucket` created."""
    async with sim_cluster_s3(data, cfg, nodes, bucket) as (_, s3):
        yield s3
