"""Process-wide timings of the data path and the metadata store, for the gateway's `/metrics`.

The storage library does not depend on a metrics library: it records durations into small
fixed-bucket histograms here (a lock and a few additions per observation, taken once per
segment or per metadata call, never per byte), and the gateway exports them at scrape time
(`gateway.metrics_export`).

Pipeline stages (`STAGES`): `hash` (content digests), `encrypt` / `decrypt` (AES-GCM seal and
open), `erasure_encode` / `erasure_decode` (zfec), `shard_write` (waiting for shard nodes to
take a segment's frames, and for their final confirmation), `shard_read` (waiting for a
segment's blocks), `metadata_commit` (the transaction that makes an object version current).
Metadata calls (`METADATA`): every call of the `MetadataStore` interface, by method.
Lifecycle actions (`LIFECYCLE`): what the lifecycle worker's passes in this process applied.
Server access logs (`ACCESS_LOG_COUNTS`): records staged, delivered and dropped, and log objects
written, by this process.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from typing import Any

from storage.metadata import Item, MetadataStore, Txn

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0)


class Timings:
    """Histograms of seconds by one label value (thread-safe: codec threads record too)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self._lock = threading.Lock()
        self._data: dict[str, tuple[list[int], list[float]]] = {}  # counts per bucket, [sum]

    def observe(self, label: str, seconds: float) -> None:
        with self._lock:
            entry = self._data.get(label)
            if entry is None:
                entry = self._data[label] = ([0] * (len(self.buckets) + 1), [0.0])
            counts, total = entry
            counts[bisect_left(self.buckets, seconds)] += 1
            total[0] += seconds

    def time(self, label: str) -> _Timer:
        """A context manager recording the time spent inside it under `label` (a small class,
        not a generator: it runs per metadata call, on the request path)."""
        return _Timer(self, label)

    def snapshot(self) -> dict[str, tuple[list[int], float]]:
        """label -> (cumulative counts per bucket upper bound then +Inf, sum of seconds)."""
        with self._lock:
            out = {}
            for label, (counts, total) in self._data.items():
                cum, run = [], 0
                for c in counts:
                    run += c
                    cum.append(run)
                out[label] = (cum, total[0])
            return out


class _Timer:
    __slots__ = ("_into", "_label", "_t")

    def __init__(self, into: Timings, label: str) -> None:
        self._into, self._label = into, label

    def __enter__(self) -> None:
        self._t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._into.observe(self._label, time.perf_counter() - self._t)


class Counters:
    """Monotonic counts by one label value (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, float] = {}

    def add(self, label: str, amount: float = 1.0) -> None:
        with self._lock:
            self._data[label] = self._data.get(label, 0.0) + amount

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._data)


class Latest:
    """One most recent value (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = value

    def get(self) -> float:
        with self._lock:
            return self._value


STAGES = Timings()
METADATA = Timings()
LIFECYCLE = Counters()  # lifecycle actions this process applied, by kind ("passes" too)
# when (wall clock, s) the last lifecycle pass this process finished began: a pass begun
# after a clock change is one that saw it (tests moving a faked clock wait for one)
LIFECYCLE_PASS_STARTED = Latest()
# access-log records by outcome: staged, delivered, dropped_buffer_full (the gateway's queue
# was full), dropped_target (target gone or closed to the delivery), dropped_failures (too
# many failed deliveries); and "objects": log objects written
ACCESS_LOG_COUNTS = Counters()
ACCESS_LOG_OUTCOMES = ("staged", "delivered", "dropped_buffer_full", "dropped_target",
                       "dropped_failures")
# admin audit entries written and files rotated, by file: "actions_entries",
# "actions_rotations", "refused_entries", "refused_rotations" (gateway/admin/audit.py)
AUDIT_COUNTS = Counters()
AUDIT_FILES = ("actions", "refused")


def stage(name: str, seconds: float) -> None:
    """Record `seconds` spent in pipeline stage `name`."""
    STAGES.observe(name, seconds)


class TimedStore:
    """A `MetadataStore` that times every interface call into `METADATA` and passes the rest
    (leases, watches, scrub) through unchanged."""

    def __init__(self, inner: MetadataStore) -> None:
        self.inner = inner
        # read on every commit and GET (`inline_bodies.enabled`): an attribute of its own, not
        # a `__getattr__` that raises AttributeError through two objects for a store without it
        self.inline_apart = bool(getattr(inner, "inline_apart", False))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, key: bytes) -> Item | None:
        with METADATA.time("get"):
            return await self.inner.get(key)

    async def get_and_range(self, keys: tuple[bytes, ...], start: bytes, end: bytes, limit: int
                            ) -> tuple[list[Item | None], list[Item]]:
        """etcd's read of several records and a range in one request (a GET's, HEAD's or
        DeleteObject's read-ahead: the only metadata read of such a request)."""
        with METADATA.time("get_and_range"):
            return await self.inner.get_and_range(  # type: ignore[attr-defined]
                keys, start, end, limit)

    async def get_many(self, keys: tuple[bytes, ...]) -> list[Item | None]:
        """etcd's read of several records in one request (a HEAD's or DeleteObject's
        read-ahead)."""
        with METADATA.time("get_many"):
            return await self.inner.get_many(keys)  # type: ignore[attr-defined]

    async def put(self, key: bytes, value: bytes) -> int:
        with METADATA.time("put"):
            return await self.inner.put(key, value)

    async def delete(self, key: bytes) -> bool:
        with METADATA.time("delete"):
            return await self.inner.delete(key)

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        with METADATA.time("range"):
            return await self.inner.range(start, end, limit, reverse)

    async def txn(self, txn: Txn) -> bool:
        with METADATA.time("txn"):
            return await self.inner.txn(txn)

    async def txn_or_read(self, txn: Txn, reads: tuple[bytes, ...]
                          ) -> tuple[bool, dict[bytes, Item | None]]:
        with METADATA.time("txn"):
            return await self.inner.txn_or_read(txn, reads)

    async def close(self) -> None:
        await self.inner.close()

