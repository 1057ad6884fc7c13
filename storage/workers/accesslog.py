"""Access-log workers: stage a gateway's records, deliver staged records as log objects.

`AccessLogStager` runs in every gateway (no lease: each drains its own memory, see
`storage.accesslog`). `AccessLogDelivery` runs under the `access-log` lease, so one gateway
at a time delivers: every batch staged under `(AL, bucket, ...)` whose source bucket's
oldest batch has waited `flush_interval_s` is written, with the source's other waiting
batches of the same configuration, as one object into the target bucket, then the batches
are deleted. The object's key is `TargetPrefixYYYY-mm-DD-HH-MM-SS-UniqueString` (or the
partitioned form `TargetPrefix<owner id>/<region>/<bucket>/YYYY/MM/DD/YYYY-mm-DD-HH-MM-SS-
UniqueString`), its time the delivery's. The key is chosen at the first attempt and kept in
the oldest batch's record before the object is written, so a delivery retried after a crash
between the write and the delete rewrites the same object instead of duplicating its lines.

A batch whose target bucket no longer exists, or no longer lets the delivery write there
(`may_deliver`, the gateway's bucket-policy check), is dropped and counted, as AWS drops
logs it cannot deliver; so is one whose delivery failed `MAX_ATTEMPTS` times in a row
(`RETRY_S` apart).

On etcd (where every idle poll is a Raft read of the whole staging area) the delivery is
woken by a watch on `(AL, ...)` when a batch is staged, at most once per `min_pause_s`,
and otherwise sleeps until the oldest waiting batch is due (or a retry; at most
`WATCHED_MAX_S`), instead of scanning every second.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from storage.accesslog import AccessLogBuffer
from storage.errors import NotFound
from storage.keyspace import ACCESS_LOG, component, space
from storage.metadata import Item, Txn
from storage.metadata.fence import LeaseFenced
from storage.objects import PutOptions
from storage.records import Bucket, pack, unpack
from storage.telemetry import ACCESS_LOG_COUNTS
from storage.workers import WorkerState

if TYPE_CHECKING:
    from storage.cluster import Cluster

log = logging.getLogger("tessera.accesslog")

SCAN_LIMIT = 5000
RETRY_S = 30.0  # a source whose delivery failed waits this long before the next attempt
MAX_ATTEMPTS = 10  # ...and its records are dropped after this many failures in a row
WATCHED_MAX_S = 30.0  # the longest sleep of a watched, idle delivery (a bound on a missed wake)
# (target bucket, target prefix, source bucket, source tenant, source owner id) -> allowed
MayDeliver = Callable[[Bucket, str, str, str, str], bool]


class AccessLogStager:
    """Moves this gateway's buffered records to the metadata store every `idle_s`."""

    name = "access-log-stage"

    def __init__(self, buffer: AccessLogBuffer, interval_s: float) -> None:
        self.buffer = buffer
        self.idle_s = interval_s

    async def step(self) -> WorkerState:
        await self.buffer.stage()
        return WorkerState.IDLE


@dataclass
class DeliveryStats:
    objects: int = 0
    records: int = 0
    dropped: int = 0


def log_object_key(conf: dict[str, Any], delivered: float, first_event: float,
                   owner_id: str, region: str, bucket: str, unique: str) -> str:
    """The key of a log object, in the configured TargetObjectKeyFormat."""
    when = datetime.fromtimestamp(delivered, UTC)
    name = when.strftime("%Y-%m-%d-%H-%M-%S") + "-" + unique
    prefix = str(conf.get("target_prefix", ""))
    if conf.get("key_format") != "partitioned":
        return prefix + name
    day = when if conf.get("date_source") != "EventTime" else datetime.fromtimestamp(
        first_event, UTC)
    return f"{prefix}{owner_id}/{region}/{bucket}/{day:%Y/%m/%d}/{name}"


class AccessLogDelivery:
    """Delivers staged access-log batches into target buckets (see the module docstring)."""

    name = "access-log"
    wake_prefix = space(ACCESS_LOG)[0]  # on etcd, a staged batch wakes it (workers/wakes.py)

    def __init__(self, cluster: Cluster, flush_interval_s: float,
                 may_deliver: MayDeliver | None = None) -> None:
        """`may_deliver` None allows only targets of the source's own tenant."""
        self._cluster = cluster
        self._flush_s = flush_interval_s
        self._may = may_deliver
        self.idle_s = self.min_pause_s = min(1.0, flush_interval_s / 2)
        self._next_due: float | None = None  # wall time the next waiting batch is due
        self.stats = DeliveryStats()
        self._retry_at: dict[str, float] = {}  # source bucket -> when to try a failed one
        self._failures: dict[str, int] = {}  # source bucket -> failed deliveries in a row

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when staged batches wake it: until the next one is due."""
        if self._next_due is None:
            return WATCHED_MAX_S
        return min(WATCHED_MAX_S, max(0.0, self._next_due - time.time()))

    async def step(self) -> WorkerState:
        items = await self._cluster.meta.range(*space(ACCESS_LOG), limit=SCAN_LIMIT)
        by_bucket: dict[str, list[Item]] = {}
        for it in items:
            by_bucket.setdefault(component(it.key, 1), []).append(it)
        now_ns = time.time_ns()
        later: list[float] = []  # when the batches left waiting are due (wall time)
        for bucket, batch_items in by_bucket.items():
            oldest = int(component(batch_items[0].key, 2))
            retry = self._retry_at.get(bucket, 0.0) - time.monotonic()
            if now_ns - oldest < self._flush_s * 1e9 or retry > 0:
                later.append(max(oldest / 1e9 + self._flush_s, time.time() + retry))
                continue
            self._retry_at.pop(bucket, None)
            groups: dict[str, list[tuple[Item, dict[str, Any]]]] = {}
            for it in batch_items:
                value = unpack(it.value)
                groups.setdefault(json.dumps(value.get("logging"), sort_keys=True),
                                  []).append((it, value))
            for group in groups.values():
                try:
                    await self._deliver(bucket, group)
                    self._failures.pop(bucket, None)
                except LeaseFenced:
                    raise  # not the target's failure: another gateway delivers them now
                except Exception:  # noqa: BLE001 - kept staged, retried a little later
                    await self._failed(bucket, group)
            if bucket in self._retry_at:
                later.append(time.time() + RETRY_S)
        self._next_due = min(later) if later else None
        return WorkerState.BUSY if len(items) == SCAN_LIMIT else WorkerState.IDLE

    async def _failed(self, bucket: str, group: list[tuple[Item, dict[str, Any]]]) -> None:
        """Retry in RETRY_S; after MAX_ATTEMPTS failures in a row, drop the records (a
        target that can never take them, a shredded tenant's, must not fail forever)."""
        n = self._failures[bucket] = self._failures.get(bucket, 0) + 1
        if n < MAX_ATTEMPTS:
            log.exception("access log: delivery for %s failed (%d); retry in %.0f s",
                          bucket, n, RETRY_S)
            self._retry_at[bucket] = time.monotonic() + RETRY_S
            return
        lines = sum(len(v.get("lines", [])) for _, v in group)
        log.exception("access log: %d records of %s dropped after %d failed deliveries",
                      lines, bucket, n)
        self._failures.pop(bucket, None)
        await self._dropped(group, lines, "dropped_failures")

    async def _dropped(self, group: list[tuple[Item, dict[str, Any]]], lines: int,
                       outcome: str) -> None:
        """Delete a dropped group's batches, then count its records: counted only once the
        delete committed, so a failed delete (the group is read again) is not counted twice
        and whoever sees the count (metrics, tests) finds the batches gone."""
        await self._cluster.meta.txn(Txn(deletes=tuple(it.key for it, _ in group)))
        self.stats.dropped += lines
        ACCESS_LOG_COUNTS.add(outcome, lines)

    async def _deliver(self, bucket: str, group: list[tuple[Item, dict[str, Any]]]) -> None:
        first_item, first = group[0]
        conf = dict(first["logging"])
        lines = [ln for _, v in group for ln in v.get("lines", [])]
        key = first.get("delivery_key")
        if key is None:  # named once, at the first attempt, and kept for any retry
            key = log_object_key(conf, time.time(), float(first.get("first", time.time())),
                                 str(first.get("source_owner_id", "")),
                                 str(first.get("region", "")), bucket,
                                 secrets.token_hex(8).upper())
            first["delivery_key"] = key
            if not await self._cluster.meta.txn(Txn(
                    compares={first_item.key: first_item.revision},
                    puts={first_item.key: pack(first)})):
                return  # changed meanwhile: the next step reads it again
        keys = tuple(it.key for it, _ in group)
        target_name = str(conf.get("target_bucket", ""))
        try:
            target = await self._cluster.buckets.get_any(target_name)
        except NotFound:
            target = None
        source_tenant = str(first.get("source_tenant", ""))
        allowed = target is not None and (
            self._may(target, str(conf.get("target_prefix", "")), bucket, source_tenant,
                      str(first.get("source_owner_id")))
            if self._may is not None else target.tenant == source_tenant)
        if target is None or not allowed:
            log.warning("access log: %d records of %s dropped: target %s %s", len(lines),
                        bucket, target_name, "is gone" if target is None else
                        "does not let the log delivery write")
            await self._dropped(group, len(lines), "dropped_target")
            return
        body = ("\n".join(lines) + "\n").encode()
        await self._cluster.objects.put(target, key, _once(body),
                                        _put_options(target, conf, len(body)))
        await self._cluster.meta.txn(Txn(deletes=keys))
        self.stats.objects += 1
        self.stats.records += len(lines)
        ACCESS_LOG_COUNTS.add("objects")
        ACCESS_LOG_COUNTS.add("delivered", len(lines))


def _put_options(target: Bucket, conf: dict[str, Any], size: int) -> PutOptions:
    grants = [list(g) for g in conf.get("grants") or []]
    acl = {"owner": target.tenant,
           "grants": [["user", target.tenant, "FULL_CONTROL"], *grants]} if grants else {}
    return PutOptions(content_type="text/plain", acl=acl, size_hint=size)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
