"""Prometheus metrics of one node, in a registry of its own (no process-wide globals)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)


class NodeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, node_id: str, zone: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tessera_node_requests", "HTTP requests by operation and status",
                                ["op", "status"], registry=r)
        self.latency = Histogram("tessera_node_request_seconds",
                                 "HTTP request latency by operation and status",
                                 ["op", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("tessera_node_bytes_in", "Shard bytes received", registry=r)
        self.bytes_out = Counter("tessera_node_bytes_out", "Shard bytes sent", registry=r)
        self.shard_writes = Counter("tessera_node_shard_writes", "Shards committed", registry=r)
        self.shard_reads = Counter("tessera_node_shard_reads", "Shard reads started", registry=r)
        self.checksum_failures = Counter(
            "tessera_node_checksum_failures", "Frames or headers that failed their checksum",
            ["where"], registry=r)
        for where in ("put", "read", "stat", "verify"):  # exported at 0 before the first one
            self.checksum_failures.labels(where=where)
        self.quarantined = Counter("tessera_node_quarantined_shards", "Shards moved to quarantine",
                                   registry=r)
        self.used_bytes = Gauge("tessera_node_used_bytes", "Bytes in stored shards", registry=r)
        self.disk_bytes = Gauge(  # packs keep deleted and replaced records until compaction
            "tessera_node_disk_bytes",
            "Bytes the node's shard storage takes on disk (shard files and pack files)",
            registry=r)
        self.free_bytes = Gauge("tessera_node_free_bytes", "Free bytes on the data disk",
                                registry=r)
        self.shards = Gauge("tessera_node_shards", "Stored shards", registry=r)
        self.reserve_bytes = Gauge(  # below reserve_size: given up, packed PUTs refused
            "tessera_node_pack_reserve_bytes",
            "Bytes the packs' reserve holds now (a full disk gives it up to delete and compact)",
            registry=r)
        self.reserve_size = Gauge(
            "tessera_node_pack_reserve_size_bytes",
            "Bytes the packs' reserve holds when whole ([packs] reserve_bytes)", registry=r)
        self.pack_damage = Gauge(
            "tessera_node_pack_damage",
            "Packs in which a restart found damage (gaps, bad records, or gone; not a torn tail)",
            registry=r)
        self.packs_missing = Gauge(
            "tessera_node_packs_missing",
            "Packs gone though compaction never dropped them: their shards are missing",
            registry=r)
        info = Gauge("tessera_node_info", "Identity of this node", ["node_id", "zone"],
                     registry=r)
        info.labels(node_id=node_id, zone=zone).set(1)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe_request(self, op: str, status: int, seconds: float) -> None:
        """Count one request and its latency; the labelled children of each (op, status)
        are looked up once and kept (`labels()` hashes and locks on every call)."""
        pair = self._children.get((op, status))
        if pair is None:
            s = str(status)
            pair = (self.requests.labels(op=op, status=s), self.latency.labels(op=op, status=s))
            self._children[(op, status)] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def render(self, usage: dict[str, int]) -> bytes:
        self.used_bytes.set(usage["used_bytes"])
        self.disk_bytes.set(usage.get("disk_bytes", usage["used_bytes"]))
        self.free_bytes.set(usage["free_bytes"])
        self.shards.set(usage["shards"])
        self.reserve_bytes.set(usage.get("reserve_bytes", 0))
        self.reserve_size.set(usage.get("reserve_size", 0))
        self.pack_damage.set(usage.get("pack_damage", 0))
        self.packs_missing.set(usage.get("packs_missing", 0))
        return generate_latest(self.registry)
