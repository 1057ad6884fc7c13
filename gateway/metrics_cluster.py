"""Cluster-wide gauges for `/metrics`: durability, worker backlogs and rates, leases, tenants.

Computing them takes metadata scans and a call to every node, so they are never computed per
scrape: a background task refreshes a cached snapshot every `[gateway] metrics_refresh_s`
seconds (or `PACE` times as long as the last refresh took, if longer, up to
`MAX_PAUSE_INTERVALS` intervals: about 1/`PACE` of the gateway's time at most, however many
objects there are) from the same bounded figures `tessera status` shows (`collect_status`)
plus one bounded sweep of current object versions for per-tenant usage; a scrape only reads
the snapshot. Counters published by the workers (repair, rebalance, scrub) are exported as
Prometheus counters, so `rate()` gives the repair and rebalance rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from storage.cluster import Cluster
from storage.keyspace import OBJECT, next_key, space
from storage.metadata import MetadataStore
from storage.records import unpack

log = logging.getLogger("tessera.metrics")
USAGE_SCAN_LIMIT = 100_000
PACE = 25.0  # a refresh waits >= PACE x the time the previous one took (<= ~4% duty)
MAX_PAUSE_INTERVALS = 6  # ...but never more than this many intervals (gauges stay fresh)


def usage_fields(raw: bytes) -> tuple[str, int, bool]:
    """(tenant, size, delete marker) of an encoded `ObjectVersion`, without building one
    (a full decode of every version costs ~10x more: parts, dataclasses)."""
    d = unpack(raw)
    return d["tenant"], int(d.get("size", 0)), bool(d.get("delete_marker", False))


async def tenant_usage(meta: MetadataStore, limit: int = USAGE_SCAN_LIMIT, page: int = 1000,
                       ) -> tuple[dict[str, dict[str, int]], bool]:
    """Bytes and objects per tenant from the current versions (bounded scan; truncated?).

    Read a page at a time, yielding to the event loop between pages, so a large sweep never
    stalls the requests the gateway is serving."""
    start, end = space(OBJECT)
    usage: dict[str, dict[str, int]] = {}
    seen = 0
    while seen < limit:
        want = min(page, limit - seen)
        items = await meta.range(start, end, limit=want)
        for item in items:
            tenant, size, marker = usage_fields(item.value)
            if marker:
                continue
            row = usage.setdefault(tenant, {"objects": 0, "bytes": 0})
            row["objects"] += 1
            row["bytes"] += size
        seen += len(items)
        if len(items) < want:
            return usage, False
        start = next_key(items[-1].key)
        await asyncio.sleep(0)
    return usage, bool(await meta.range(start, end, limit=1))


class ClusterGauges:
    """The cached snapshot and the task that refreshes it; also a Prometheus collector."""

    def __init__(self, cluster: Cluster, holder: str, interval_s: float | None = None) -> None:
        self._cluster = cluster
        self._holder = holder
        self._interval = max(0.5, cluster.cfg.gateway.metrics_refresh_s
                             if interval_s is None else interval_s)
        self._status: dict[str, Any] | None = None
        self._usage: dict[str, dict[str, int]] = {}
        self._usage_truncated = False
        self._refreshed = 0.0
        self._took = 0.0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        from storage.clusterstatus import collect_status

        t = time.perf_counter()
        self._status = await collect_status(self._cluster)
        self._usage, self._usage_truncated = await tenant_usage(self._cluster.meta)
        self._took = time.perf_counter() - t
        self._refreshed = time.time()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def pause_s(self) -> float:
        """How long to wait before the next refresh: the interval, or longer when the last
        refresh was slow (many objects to sweep, a loaded machine)."""
        return max(self._interval, min(PACE * self._took,
                                       MAX_PAUSE_INTERVALS * self._interval))

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - metrics must never take the gateway down
                self._took = time.perf_counter() - t
                log.warning("metrics refresh failed", exc_info=True)
            # the sweep reads every current record (inline bodies included), which on
            # etcd is megabytes per refresh: paced by its cost (`pause_s`)
            await asyncio.sleep(self.pause_s())

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield _gauge("tessera_metrics_refresh_timestamp_seconds",
                     "When the cluster gauges were last refreshed (Unix time)", self._refreshed)
        yield _gauge("tessera_metrics_refresh_seconds",
                     "How long the last refresh of the cluster gauges took", self._took)
        s = self._status
        if s is None:
            return
        yield from _durability(s)
        yield from _workers(s, self._holder)
        objects = GaugeMetricFamily("tessera_tenant_objects",
                                    "Current objects per tenant (delete markers excluded)",
                                    labels=["tenant"])
        size = GaugeMetricFamily("tessera_tenant_bytes", "Bytes of current objects per tenant",
                                 labels=["tenant"])
        for tenant, row in sorted(self._usage.items()):
            objects.add_metric([tenant], row["objects"])
            size.add_metric([tenant], row["bytes"])
        yield objects
        yield size
        yield _gauge("tessera_tenant_usage_truncated",
                     "1 when the usage sweep hit its scan limit (figures are partial)",
                     float(self._usage_truncated))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _durability(s: dict[str, Any]) -> Iterator[Metric]:
    nodes = GaugeMetricFamily("tessera_nodes", "Nodes by health state", labels=["state"])
    states: dict[str, int] = {}
    for n in s["nodes"]:
        states[n["state"]] = states.get(n["state"], 0) + 1
    for state, count in sorted(states.items()):
        nodes.add_metric([state], count)
    yield nodes
    st = s["stripes"]
    fam = GaugeMetricFamily("tessera_stripes_by_healthy_shards",
                            "Live stripes by shards on usable nodes (bounded scan)",
                            labels=["healthy"])
    for healthy, count in st["by_healthy_shards"].items():
        fam.add_metric([str(healthy)], count)
    yield fam
    yield _gauge("tessera_stripes_scanned", "Stripes the bounded scan judged", st["scanned"])
    yield _gauge("tessera_stripes_zone_unsafe",
                 "Stripes with more than m shards in one zone", st["zone_unsafe"])
    yield _gauge("tessera_durability_nines", "Annual object durability estimate, in nines",
                 s["durability"].get("object_nines", 0.0))


def _workers(s: dict[str, Any], holder: str) -> Iterator[Metric]:
    rep, rb, sc = s["repair"], s["rebalance"] or {}, s["scrub"]
    yield _gauge("tessera_repair_backlog", "Stripes queued for repair", rep["backlog"])
    yield _gauge("tessera_gc_backlog", "Stripes queued for garbage collection", s["gc"]["backlog"])
    yield _counter("tessera_repair_stripes_repaired", "Stripes repaired (cluster-wide)",
                   rep.get("stripes_repaired", 0))
    yield _counter("tessera_repair_bytes_rebuilt", "Shard bytes rebuilt by repair",
                   rep.get("bytes_rebuilt", 0))
    yield _counter("tessera_repair_shards_rebuilt", "Shards rebuilt by repair",
                   rep.get("shards_rebuilt", 0))
    yield _counter("tessera_repair_sources_disagree", "Rebuilds stopped because a source "
                   "shard did not match the others", rep.get("sources_disagree", 0))
    yield _counter("tessera_repair_rebuilds_refused", "Rebuilds refused: the k shards left "
                   "do not authenticate and no liar could be named (each retry counts)",
                   rep.get("rebuilds_refused", 0))
    yield _gauge("tessera_repair_stripes_refused_alarm", "Stripes whose rebuild was refused "
                 "several times in a row (named in tessera status; bounded list)",
                 len(rep.get("refused_stripes") or []))
    yield _counter("tessera_repair_sweep_checked", "Stripes checked by the repair sweep",
                   rep.get("sweep_checked", 0))
    yield _counter("tessera_repair_orphan_checks", "Orphan checks made by the repair worker "
                   "(a page of each usable node's shards each)", rep.get("orphan_checks", 0))
    yield _counter("tessera_repair_orphans_deleted", "Shards no manifest names deleted by the "
                   "orphan check", rep.get("orphans_deleted", 0))
    yield _gauge("tessera_repair_orphans_watched", "Shards without an owner the repair worker "
                 "watches for the orphan grace (kept in the store: a new holder continues it)",
                 rep.get("orphans_watched", 0))
    yield _gauge("tessera_repair_orphan_watch_oldest_seconds", "How long the repair worker has "
                 "watched its longest-watched shard without an owner (about the orphan grace "
                 "when orphans are deleted; never reaching it means none is)",
                 rep.get("orphan_watch_oldest_s", 0.0))
    yield _counter("tessera_rebalance_shards_moved", "Shards moved by rebalance and drains",
                   rb.get("shards_moved", 0))
    yield _counter("tessera_rebalance_bytes_moved", "Bytes moved by rebalance and drains",
                   rb.get("bytes_moved", 0))
    left = sum(int((d or {}).get("left", 0) or 0) for d in (rb.get("draining") or {}).values())
    yield _gauge("tessera_rebalance_backlog", "Shards still to move off draining nodes", left)
    yield _counter("tessera_scrub_shards_verified", "Shards verified by node scrubbers",
                   sc["shards_verified"])
    yield _counter("tessera_scrub_corrupt_found", "Corrupt shards node scrubbers found",
                   sc["corrupt_found"])
    yield _gauge("tessera_scrub_passes_min", "Fewest complete scrub passes of any node",
                 sc["passes_min"])
    archive = s.get("archive") or {}
    yield _gauge("tessera_restore_backlog", "Archive restore jobs pending (lifecycle tier)",
                 archive.get("restores_pending", 0))
    yield _gauge("tessera_restored_copies", "Restored archive copies alive",
                 archive.get("restored_copies", 0))
    cls = GaugeMetricFamily("tessera_storage_class_bytes", "Bytes of current objects by "
                            "storage class (bounded scan)", labels=["storage_class"])
    for name, row in (archive.get("classes") or {}).items():
        cls.add_metric([name], row["bytes"])
    yield cls
    lease = GaugeMetricFamily("tessera_worker_lease", "1 for each worker lease and its holder",
                              labels=["worker", "holder"])
    mine = GaugeMetricFamily("tessera_worker_lease_held",
                             "1 when this gateway holds the worker's lease", labels=["worker"])
    for w in s["workers"]:
        lease.add_metric([w["worker"], w["holder"]], 1)
        mine.add_metric([w["worker"]], float(w["holder"] == holder))
    yield lease
    yield mine
