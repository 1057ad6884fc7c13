"""A handle on the whole cluster for one process (like librados): metadata, keys, nodes.

The gateway, the block driver, the workers and the CLI all open one `Cluster` and use its
services; nothing else wires the library together.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import aiohttp

from storage.buckets import BucketService
from storage.config import Config
from storage.crypto.keys import FileRootKey
from storage.health import HealthTracker
from storage.keyspace_migration import upgrade as upgrade_keyspace
from storage.lying import LyingShards
from storage.membership import MembershipWatcher
from storage.membership import refresh as refresh_membership
from storage.metadata import MetadataStore, open_store
from storage.objects import ObjectService
from storage.shards.auth import load_or_create_secret
from storage.shards.client import NodeClient
from storage.stripes import StripeStore
from storage.telemetry import TimedStore
from storage.tenants import TenantService


@dataclass
class Cluster:
    cfg: Config
    meta: MetadataStore
    tenants: TenantService
    buckets: BucketService
    objects: ObjectService
    stripes: StripeStore
    health: HealthTracker
    nodes: NodeClient
    session: aiohttp.ClientSession
    cpu: ThreadPoolExecutor
    hashing: ThreadPoolExecutor
    membership: MembershipWatcher | None = None

    @classmethod
    async def open(cls, cfg: Config, probe: bool = True,
                   gc_grace_s: float | None = None) -> Cluster:
        """Open the cluster. `gc_grace_s` (default: [workers] gc_grace_s) is how long
        the stripes of a replaced or transitioned version stay for reads already in flight."""
        if gc_grace_s is None:
            gc_grace_s = cfg.workers.gc_grace_s
        meta_path = cfg.data_dir / cfg.metadata_path
        meta = cast(MetadataStore, TimedStore(
            await open_store(cfg.metadata_backend, str(meta_path), cfg.etcd_endpoints)))
        await upgrade_keyspace(meta)  # layout-1 stores (before storage.keyspace) move once
        tenants = TenantService(meta, FileRootKey(cfg.root_key_path))
        await tenants.load()
        secret = load_or_create_secret(cfg.secret_path)
        conn = aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=30)
        session = aiohttp.ClientSession(connector=conn, auto_decompress=False)
        nodes = NodeClient(session, secret)
        health = HealthTracker(cfg.nodes, nodes)
        threads = max(2, cfg.gateway.cpu_threads or (os.cpu_count() or 2))
        cpu = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="codec")
        hashing = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hash")
        stripes = StripeStore(cfg, nodes, health, cpu, hashing, lies=LyingShards(meta, nodes))
        buckets = BucketService(meta, cfg.gateway.region)
        objects = ObjectService(cfg, meta, tenants, buckets, stripes, gc_grace_s=gc_grace_s)
        await refresh_membership(meta, cfg, health)  # config nodes + the M/ overlay
        watcher = MembershipWatcher(meta, cfg, health)
        if probe:
            await health.probe_once()
            health.start()
            watcher.start()
        return cls(cfg, meta, tenants, buckets, objects, stripes, health, nodes, session, cpu,
                   hashing, watcher)

    async def close(self) -> None:
        if self.membership is not None:
            await self.membership.stop()
        await self.health.stop()
        await self.session.close()
        await self.meta.close()
        self.cpu.shutdown(wait=False)
        self.hashing.shutdown(wait=False)
