"""A handle on the whole cluster for one process (like librados): metadata, keys, nodes.

The gateway, the block driver, the workers and the CLI all open one `Cluster` and use its
services (objects, multipart, archive, lifecycle, volumes); nothing else wires the library
together: `Cluster.wire` builds every service over a metadata store and a node transport,
`Cluster.open` gives it the real ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import aiohttp

from storage.archive import ArchiveService
from storage.buckets import BucketService
from storage.config import Config
from storage.crypto.keys import FileRootKey
from storage.health import HealthTracker
from storage.keyspace_migration import upgrade as upgrade_keyspace
from storage.lifecycle import LifecycleEngine
from storage.lifecycle_clock import LifecycleClock
from storage.lying import LyingShards
from storage.membership import MembershipWatcher
from storage.membership import refresh as refresh_membership
from storage.metadata import MetadataStore, open_store
from storage.multipart import MultipartService
from storage.objects import ObjectService
from storage.shards.auth import load_or_create_secret
from storage.shards.client import NodeClient
from storage.shards.connpool import MAX_IN_FLIGHT
from storage.shards.transport import NodeTransport
from storage.stripes import StripeStore
from storage.telemetry import TimedStore
from storage.tenants import TenantService
from storage.volumes import VolumeService

if TYPE_CHECKING:
    from storage.sharedhealth import SharedHealth
    from storage.workers import Worker
    from storage.workers.accesslog import MayDeliver


@dataclass
class Cluster:
    cfg: Config
    meta: MetadataStore
    tenants: TenantService
    buckets: BucketService
    objects: ObjectService
    stripes: StripeStore
    health: HealthTracker
    nodes: NodeTransport
    session: aiohttp.ClientSession | None
    cpu: ThreadPoolExecutor
    hashing: ThreadPoolExecutor
    multipart: MultipartService
    archive: ArchiveService
    lifecycle: LifecycleEngine
    volumes: VolumeService
    membership: MembershipWatcher | None = None

    @classmethod
    def wire(cls, cfg: Config, meta: MetadataStore, tenants: TenantService, nodes: NodeTransport,
             cpu: ThreadPoolExecutor, hashing: ThreadPoolExecutor,
             session: aiohttp.ClientSession | None = None, gc_grace_s: float | None = None,
             stall_s: float | None = None, workers: int = 1) -> Cluster:
        """Every service over `meta` and the node transport `nodes` (the simulation tests
        pass their in-memory nodes here). `gc_grace_s` defaults to [workers] gc_grace_s;
        `workers` is how many gateway processes share the upload budget."""
        grace = cfg.workers.gc_grace_s if gc_grace_s is None else gc_grace_s
        health = HealthTracker(cfg.nodes, nodes, probe_interval_s=cfg.gateway.health_probe_s)
        extra = {} if stall_s is None else {"stall_s": stall_s}
        stripes = StripeStore(cfg, nodes, health, cpu, hashing, lies=LyingShards(meta, nodes),
                              workers=workers, **extra)
        buckets = BucketService(meta, cfg.gateway.region)
        objects = ObjectService(cfg, meta, tenants, buckets, stripes, gc_grace_s=grace)
        multipart = MultipartService(meta, tenants, objects, gc_grace_s=grace)
        archive = ArchiveService(cfg, meta, tenants, objects)
        lifecycle = LifecycleEngine(meta, objects, archive, multipart, LifecycleClock(meta, cfg),
                                    cfg.lifecycle.version_place_retention_s)
        volumes = VolumeService(cfg, meta, tenants, stripes, gc_grace_s=grace)
        return cls(cfg, meta, tenants, buckets, objects, stripes, health, nodes, session, cpu,
                   hashing, multipart, archive, lifecycle, volumes)

    @classmethod
    async def open(cls, cfg: Config, probe: bool = True,
                   gc_grace_s: float | None = None, shared_health: SharedHealth | None = None,
                   probe_loop: bool = True, workers: int = 1) -> Cluster:
        """Open the cluster. `gc_grace_s` (default: [workers] gc_grace_s) is how long
        the stripes of a replaced or transitioned version stay for reads already in flight.
        `shared_health`: node health shared with other processes (gateway workers); with
        it, `probe_loop=False` leaves the periodic probe to one of them. `workers`: how many
        gateway processes share `[gateway] upload_budget_bytes` (`worker_share`)."""
        meta_path = cfg.data_dir / cfg.metadata_path
        meta = cast(MetadataStore, TimedStore(
            await open_store(cfg.metadata_backend, str(meta_path), cfg.etcd_endpoints, cfg.etcd_tls)))
        await upgrade_keyspace(meta)  # layout-1 stores (before storage.keyspace) move once
        tenants = TenantService(meta, FileRootKey(cfg.root_key_path))
        await tenants.load()
        secret = load_or_create_secret(cfg.secret_path)
        conn = aiohttp.TCPConnector(limit=0, limit_per_host=MAX_IN_FLIGHT, keepalive_timeout=30)
        session = aiohttp.ClientSession(connector=conn, auto_decompress=False)
        nodes = NodeClient(session, secret)
        threads = max(2, cfg.gateway.cpu_threads or (os.cpu_count() or 2))
        cpu = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="codec")
        hashing = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hash")
        c = cls.wire(cfg, meta, tenants, nodes, cpu, hashing, session, gc_grace_s,
                     workers=workers)
        await refresh_membership(meta, cfg, c.health)  # config nodes + the M/ overlay
        c.membership = MembershipWatcher(meta, cfg, c.health)
        if shared_health is not None:
            c.health.share(shared_health)
        if probe:
            await c.health.probe_once()
            if probe_loop or shared_health is None:
                c.health.start()
            c.membership.start()
        return c

    def workers(self, clients_busy: Callable[[], bool] = lambda: False,
                may_deliver: MayDeliver | None = None) -> list[Worker]:
        """Every background worker over this cluster's services, wired here as the services
        are (the gateway runs each under its lease: `storage.workers.runner`).
        `clients_busy` tells repair and rebalance when S3 clients are active; `may_deliver`
        is the S3 layer's check that a log target's policy admits another tenant's logs
        (None: only same-tenant targets)."""
        from storage.workers.accesslog import AccessLogDelivery
        from storage.workers.deepscrub import DeepScrubber
        from storage.workers.gc import GarbageCollector
        from storage.workers.keys import Rewrapper, ShredScheduler
        from storage.workers.lifecycle import LifecycleWorker
        from storage.workers.rebalance import Rebalancer
        from storage.workers.reclaim import TenantReclaimer
        from storage.workers.repair import RepairWorker
        from storage.workers.restore import RestoreWorker

        scrubber = DeepScrubber(self.cfg, self.meta, self.objects, self.nodes, self.health,
                                self.cpu, self.stripes.lies)
        repair = RepairWorker(self.cfg, self.meta, self.nodes, self.health, self.cpu,
                              clients_busy=clients_busy)
        repair.verify_stripe = scrubber.check_stripe  # a rebuild whose sources disagree
        repair.stripe_codec = scrubber.codec  # rebuilds a stripe with liars from its key
        rebalance = Rebalancer(self.cfg, self.meta, self.nodes, self.health, self.cpu,
                               clients_busy=clients_busy)
        rebalance.stripe_codec = scrubber.codec  # checks a rebuild from k sources
        return [
            GarbageCollector(self.meta, self.stripes),
            repair,
            rebalance,
            scrubber,
            Rewrapper(self.meta, self.tenants),
            ShredScheduler(self.meta, self.tenants, self.objects.lock_clock.now),
            TenantReclaimer(self.meta, self.cfg.workers.gc_grace_s, self.volumes,
                            orphan_grace_s=self.cfg.repair.orphan_grace_s),
            RestoreWorker(self.archive),
            LifecycleWorker(self.lifecycle, self.cfg.archive.lifecycle_interval_s),
            AccessLogDelivery(self, self.cfg.access_log.flush_interval_s, may_deliver),
        ]

    async def close(self) -> None:
        if self.membership is not None:
            await self.membership.stop()
        await self.health.stop()
        close_nodes = getattr(self.nodes, "close", None)
        if close_nodes is not None:
            close_nodes()  # the shard fetcher's idle connections
        if self.session is not None:
            await self.session.close()
        await self.meta.close()
        self.cpu.shutdown(wait=False)
        self.hashing.shutdown(wait=False)
