"""Read-only admin routes the console (and scripts) list things with: buckets with their size
and object counts, the archive tier's queues and the lifecycle worker's counts, the audit log.

    GET /admin/v1/buckets[?tenant=T]     buckets, objects and bytes of current versions
    GET /admin/v1/queues                 restore jobs pending, restored copies, lifecycle passes
    GET /admin/v1/audit[?who=&action=&result=&tenant=&since=&limit=]   newest entries first,
                                         rotated files too (`audit_read`); `truncated` and
                                         `cut_short` (the logs a byte cap ended)

Every figure comes from a bounded scan (`SCAN_LIMIT` records) and says when it was cut short.
Signed (or a console session) and audited like every admin route (`AdminApi._wrap`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.admin.api import PREFIX, AdminApi, Call
from gateway.admin.audit import REFUSED
from gateway.admin.audit_read import list_entries
from gateway.admin.auth import AdminError
from storage.keyspace import (
    BUCKET,
    RESTORE_EXPIRY,
    RESTORE_QUEUE,
    archive_job_of,
    next_key,
    object_prefix,
    space,
    span,
    unpack,
)
from storage.records import Bucket, ObjectVersion
from storage.telemetry import LIFECYCLE

SCAN_LIMIT = 100_000  # object records read per /buckets answer, all buckets together
QUEUE_ROWS = 100  # queue entries listed (the counts go further)
PAGE = 1000


class InventoryApi:
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.cluster = api.cluster

    def register(self, app: web.Application) -> None:
        w = self.api._wrap
        app.router.add_route("GET", PREFIX + "/buckets", w("bucket.list", self.buckets))
        app.router.add_route("GET", PREFIX + "/queues", w("queue.list", self.queues))
        app.router.add_route("GET", PREFIX + "/audit", w("audit.list", self.audit))

    async def buckets(self, call: Call) -> tuple[int, Any]:
        tenant = call.request.query.get("tenant")
        meta = self.cluster.meta
        budget = SCAN_LIMIT
        rows = []
        start, end = space(BUCKET)
        while True:
            items = await meta.range(start, end, limit=PAGE)
            for item in items:
                b = Bucket.decode(item.value)
                if (tenant and b.tenant != tenant) or b.tenant.startswith("_"):
                    continue
                objects, size, read, cut = await _usage(meta, b.name, budget)
                budget -= read
                rows.append({"name": b.name, "tenant": b.tenant, "created": b.created,
                             "region": b.region, "versioning": b.versioning or "Unversioned",
                             "lifecycle_rules": len(b.config.get("lifecycle") or []),
                             "objects": objects, "bytes": size, "truncated": cut})
            if len(items) < PAGE:
                break
            start = next_key(items[-1].key)
        return 200, {"buckets": rows}

    async def queues(self, _: Call) -> tuple[int, Any]:
        meta = self.cluster.meta
        restores = await meta.range(*space(RESTORE_QUEUE), limit=SCAN_LIMIT)
        copies = await meta.range(*space(RESTORE_EXPIRY), limit=SCAN_LIMIT)
        return 200, {
            "restores_pending": len(restores), "restores": _jobs(restores, "due"),
            "restored_copies": len(copies), "copies": _jobs(copies, "expires"),
            "truncated": max(len(restores), len(copies)) >= SCAN_LIMIT,
            "lifecycle": {k: int(v) for k, v in sorted(LIFECYCLE.snapshot().items())},
            "lifecycle_interval_s": self.cluster.cfg.archive.lifecycle_interval_s,
        }

    async def audit(self, call: Call) -> tuple[int, Any]:
        q = call.request.query
        try:
            limit = min(1000, max(1, int(q.get("limit", "200"))))
            since = float(q.get("since", "0"))
        except ValueError:
            raise AdminError(400, "InvalidArgument", "limit is a whole number and since a "
                             "Unix time") from None
        want = {k: q[k] for k in ("who", "tenant", "via") if q.get(k)}
        prefixes = {k: q[k] for k in ("action", "result") if q.get(k)}
        def match(e: dict[str, Any]) -> bool:
            return all(str(e.get(k, "")) == v for k, v in want.items()) and \
                all(str(e.get(k, "")).startswith(v) for k, v in prefixes.items())

        logs = self.api.audit.files()
        result = prefixes.get("result")
        if result is not None and not (REFUSED.startswith(result) or result.startswith(REFUSED)):
            del logs["refused"]  # no refused entry can match: its read costs nothing
        got = await asyncio.to_thread(list_entries, logs, match, limit, since)
        # cut short: a log's byte cap ended its read; older matching entries were not read
        return 200, {"entries": got.entries, "truncated": bool(got.cut_short),
                     "cut_short": got.cut_short}


async def _usage(meta: Any, bucket: str, budget: int) -> tuple[int, int, int, bool]:
    """(objects, bytes, records read, cut short?) of a bucket's current versions."""
    start, end = span(object_prefix(bucket))
    objects = size = read = 0
    while read < budget:
        items = await meta.range(start, end, limit=min(PAGE, budget - read))
        for item in items:
            v = ObjectVersion.decode(item.value)
            if not v.delete_marker:
                objects += 1
                size += v.size
        read += len(items)
        if len(items) < PAGE:
            return objects, size, read, False
        start = next_key(items[-1].key)
    return objects, size, read, bool(await meta.range(start, end, limit=1))


def _jobs(items: list[Any], when: str) -> list[dict[str, Any]]:
    rows = []
    for item in items[:QUEUE_ROWS]:
        bucket, key, vid = archive_job_of(item.key)
        rows.append({"bucket": bucket, "key": key, "version_id": vid,
                     when: int(unpack(item.key)[1]) / 1e9})
    return rows


def register_inventory(app: web.Application, api: AdminApi) -> None:
    """Add the listing routes (before the admin API's catch-all route)."""
    InventoryApi(api).register(app)

