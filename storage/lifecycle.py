"""Bucket lifecycle rules: which action is due for which version (pure), and one pass over
the buckets that applies them (`LifecycleEngine.run_once`, what the worker and
`tessera lifecycle run-once` call).

Rules are the plain dicts `gateway.s3.config_xml.parse_lifecycle` stores in
`bucket.config["lifecycle"]`. As in S3: an action with Days is due at creation (or, for
noncurrent actions, at the time the version became noncurrent) plus Days, rounded up to the
next day boundary (midnight UTC with real days; the day length is `ArchiveSettings.day_seconds`);
an action with Date is due at that date. Expiration wins over transition; among transitions
the coldest due class wins, and a version only ever moves to a colder class (waterfall).
Objects under 128 KiB are not moved to STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or
GLACIER_IR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storage import object_lock
from storage.archive import CLASS_RANK, ArchiveService, round_up_to_day
from storage.errors import NotFound, StorageError
from storage.keyspace import BUCKET, next_key, object_prefix, space, span, version_prefix
from storage.metadata import MetadataStore
from storage.records import Bucket, ObjectVersion

if TYPE_CHECKING:
    from storage.multipart import MultipartService
    from storage.objects import ObjectService

SMALL_OBJECT_BYTES = 128 * 1024
SMALL_EXEMPT_CLASSES = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")
PAGE = 500


# --- pure rule evaluation --------------------------------------------------------------------


def matches(rule: dict[str, Any], key: str, size: int, tags: dict[str, str],
            ignore_size_and_tags: bool = False) -> bool:
    """Whether an Enabled rule's filter (prefix, tags, size bounds) selects this object."""
    if rule.get("status") != "Enabled":
        return False
    f = rule.get("filter") or {}
    if not key.startswith(f.get("prefix") or ""):
        return False
    if ignore_size_and_tags:
        return True
    if any(tags.get(k) != v for k, v in (f.get("tags") or {}).items()):
        return False
    gt, lt = f.get("size_gt"), f.get("size_lt")
    return (gt is None or size > gt) and (lt is None or size < lt)


def due_at(days: int | None, date: str | None, since: float, day_s: float) -> float | None:
    """When an action with Days (counted from `since`) or Date becomes due; None if neither."""
    if date:
        return datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
    if days is None:
        return None
    return round_up_to_day(since + days * day_s, day_s)


def _may_move(size: int, target: str, current: str) -> bool:
    if CLASS_RANK.get(target, 0) <= CLASS_RANK.get(current, 0):
        return False
    return not (target in SMALL_EXEMPT_CLASSES and size < SMALL_OBJECT_BYTES)


@dataclass(frozen=True)
class Action:
    kind: str  # "expire" | "transition" | "remove_marker"
    storage_class: str | None = None


def current_action(rules: list[dict[str, Any]], v: ObjectVersion, now: float, day_s: float,
                   only_version: bool = False) -> Action | None:
    """The action due now for a current version (`only_version`: no other versions exist)."""
    if v.delete_marker:
        for r in rules:
            e = r.get("expiration") or {}
            if e.get("expired_object_delete_marker") and only_version and \
                    matches(r, v.key, 0, {}, ignore_size_and_tags=True):
                return Action("remove_marker")
        return None
    best: str | None = None
    for r in rules:
        if not matches(r, v.key, v.size, v.tags):
            continue
        e = r.get("expiration") or {}
        t = due_at(e.get("days"), e.get("date"), v.last_modified, day_s)
        if t is not None and t <= now:
            return Action("expire")
        for tr in r.get("transitions") or []:
            t = due_at(tr.get("days"), tr.get("date"), v.last_modified, day_s)
            sc = tr["storage_class"]
            if t is not None and t <= now and _may_move(v.size, sc, v.storage_class) and \
                    (best is None or CLASS_RANK[sc] > CLASS_RANK[best]):
                best = sc
    return Action("transition", best) if best else None


def noncurrent_action(rules: list[dict[str, Any]], v: ObjectVersion, since: float,
                      newer_noncurrent: int, now: float, day_s: float) -> Action | None:
    """The action due for a noncurrent version: noncurrent since `since`, with
    `newer_noncurrent` noncurrent versions of the same key newer than it."""
    best: str | None = None
    for r in rules:
        if not matches(r, v.key, v.size, v.tags, ignore_size_and_tags=v.delete_marker):
            continue
        ne = r.get("noncurrent_expiration") or {}
        t = due_at(ne.get("noncurrent_days"), None, since, day_s)
        keep = ne.get("newer_noncurrent_versions")
        if t is not None and t <= now and (keep is None or newer_noncurrent >= keep):
            return Action("expire")
        if v.delete_marker:
            continue
        for tr in r.get("noncurrent_transitions") or []:
            t = due_at(tr.get("noncurrent_days"), None, since, day_s)
            keep = tr.get("newer_noncurrent_versions")
            sc = tr["storage_class"]
            if t is not None and t <= now and (keep is None or newer_noncurrent >= keep) and \
                    _may_move(v.size, sc, v.storage_class) and \
                    (best is None or CLASS_RANK[sc] > CLASS_RANK[best]):
                best = sc
    return Action("transition", best) if best else None


def abort_due(rules: list[dict[str, Any]], key: str, initiated: float, now: float,
              day_s: float) -> bool:
    for r in rules:
        days = r.get("abort_incomplete_mpu_days")
        if days is not None and matches(r, key, 0, {}, ignore_size_and_tags=True):
            t = due_at(days, None, initiated, day_s)
            if t is not None and t <= now:
                return True
    return False


# --- applying the rules ----------------------------------------------------------------------


@dataclass
class LifecycleReport:
    buckets: int = 0
    expired: int = 0
    delete_markers_removed: int = 0
    transitioned: int = 0
    noncurrent_expired: int = 0
    noncurrent_transitioned: int = 0
    uploads_aborted: int = 0
    errors: int = 0


class LifecycleEngine:
    """One pass over every bucket with lifecycle rules, applying what is due."""

    def __init__(self, meta: MetadataStore, objects: ObjectService, archive: ArchiveService,
                 multipart: MultipartService) -> None:
        self._meta = meta
        self._objects = objects
        self._archive = archive
        self._multipart = multipart
        self.day_s = archive.settings.day_seconds

    async def run_once(self, now: float | None = None) -> LifecycleReport:
        now = time.time() if now is None else now
        rep = LifecycleReport()
        start, end = space(BUCKET)
        while True:
            items = await self._meta.range(start, end, limit=PAGE)
            for item in items:
                b = Bucket.decode(item.value)
                b.revision = item.revision  # deletes compare it (BucketService.guard)
                rules = b.config.get("lifecycle")
                if rules:
                    rep.buckets += 1
                    try:
                        await self._bucket(b, rules, now, rep)
                    except NotFound:
                        continue
            if len(items) < PAGE:
                return rep
            start = next_key(items[-1].key)

    async def _bucket(self, b: Bucket, rules: list[dict[str, Any]], now: float,
                      rep: LifecycleReport) -> None:
        if b.versioning:
            await self._versioned(b, rules, now, rep)
        else:
            await self._current_only(b, rules, now, rep)
        if any(r.get("abort_incomplete_mpu_days") is not None for r in rules):
            await self._uploads(b, rules, now, rep)

    async def _current_only(self, b: Bucket, rules: list[dict[str, Any]], now: float,
                            rep: LifecycleReport) -> None:
        base = object_prefix(b.name)
        start, end = span(base)
        while True:
            items = await self._meta.range(start, end, limit=PAGE)
            for item in items:
                v = ObjectVersion.decode(item.value)
                act = current_action(rules, v, now, self.day_s, only_version=True)
                if act is not None:
                    await self._apply(b, v, act, rep, current=True)
            if len(items) < PAGE:
                return
            start = next_key(items[-1].key)

    async def _versioned(self, b: Bucket, rules: list[dict[str, Any]], now: float,
                         rep: LifecycleReport) -> None:
        """Walk V/ key by key (newest first); versions only in O/ ("null") count too."""
        base = version_prefix(b.name)
        start, end = span(base)
        group: list[ObjectVersion] = []
        while True:
            items = await self._meta.range(start, end, limit=PAGE)
            for item in items:
                v = ObjectVersion.decode(item.value)
                if group and group[0].key != v.key:
                    await self._key_versions(b, rules, group, now, rep)
                    group = []
                group.append(v)
            if len(items) < PAGE:
                break
            start = next_key(items[-1].key)
        if group:
            await self._key_versions(b, rules, group, now, rep)
        # objects written before versioning was enabled have only their O/ record
        obase = object_prefix(b.name)
        start, end = span(obase)
        while True:
            items = await self._meta.range(start, end, limit=PAGE)
            for item in items:
                v = ObjectVersion.decode(item.value)
                if not await self._meta.range(*span(version_prefix(b.name, v.key)), limit=1):
                    act = current_action(rules, v, now, self.day_s, only_version=True)
                    if act is not None:
                        await self._apply(b, v, act, rep, current=True)
            if len(items) < PAGE:
                return
            start = next_key(items[-1].key)

    async def _key_versions(self, b: Bucket, rules: list[dict[str, Any]],
                            versions: list[ObjectVersion], now: float,
                            rep: LifecycleReport) -> None:
        cur = versions[0]
        act = current_action(rules, cur, now, self.day_s, only_version=len(versions) == 1)
        if act is not None and await self._objects.is_latest(cur):
            await self._apply(b, cur, act, rep, current=True)
        for i, v in enumerate(versions[1:], start=1):
            since = versions[i - 1].last_modified
            act = noncurrent_action(rules, v, since, i - 1, now, self.day_s)
            if act is not None:
                await self._apply(b, v, act, rep, current=False)

    @staticmethod
    def _locked(v: ObjectVersion) -> None:
        object_lock.check_delete(v.lock, False, time.time())

    async def _apply(self, b: Bucket, v: ObjectVersion, act: Action, rep: LifecycleReport,
                     current: bool) -> None:
        try:
            if act.kind == "transition" and act.storage_class:
                if await self._archive.transition(v, act.storage_class):
                    if current:
                        rep.transitioned += 1
                    else:
                        rep.noncurrent_transitioned += 1
            elif act.kind == "remove_marker":
                await self._objects.delete(b, v.key, v.version_id,
                                           protect=self._locked)
                rep.delete_markers_removed += 1
            elif current and not b.versioning:
                latest = await self._objects.head(b, v.key)
                if latest.version_id == v.version_id and \
                        latest.last_modified == v.last_modified:
                    await self._objects.delete(b, v.key)
                    rep.expired += 1
            elif current:
                await self._objects.delete(b, v.key)  # a delete marker
                rep.expired += 1
            else:
                await self._objects.delete(b, v.key, v.version_id,
                                           protect=self._locked)
                rep.noncurrent_expired += 1
        except (NotFound, object_lock.ObjectLocked):
            return  # gone meanwhile, or kept by Object Lock (lifecycle never bypasses it)
        except StorageError:
            rep.errors += 1

    async def _uploads(self, b: Bucket, rules: list[dict[str, Any]], now: float,
                       rep: LifecycleReport) -> None:
        marker, id_marker = "", ""
        while True:
            ups, _, more = await self._multipart.list_uploads(
                b, key_marker=marker, upload_id_marker=id_marker)
            for up in ups:
                if abort_due(rules, up.key, up.initiated, now, self.day_s):
                    try:
                        await self._multipart.abort(b, up.key, up.upload_id)
                        rep.uploads_aborted += 1
                    except NotFound:
                        pass
            if not more or not ups:
                return
            marker, id_marker = ups[-1].key, ups[-1].upload_id
