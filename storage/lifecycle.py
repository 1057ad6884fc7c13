"""One pass over the buckets that applies their lifecycle rules (`LifecycleEngine.run_once`,
what the worker and `tessera lifecycle run-once` call).

What is due for which version is decided by `storage.lifecycle_rules` (pure); the day length
is read from `storage.lifecycle_clock` at the start of each pass, so a changed day applies at
the next pass. Object Lock is respected: a version under retention or legal hold is never
removed (an expiration of a current version only adds a delete marker, as in S3).

The pass also drops, in every bucket (rules or not), the places of versions deleted more than
`[lifecycle] version_place_retention_s` ago (storage/version_places.py, the one sweeper of
those records while the bucket lives).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from storage import object_lock
from storage.archive import ArchiveService
from storage.conditions import DeleteConditions
from storage.config_sections import LifecycleSettings
from storage.errors import NotFound, StorageError
from storage.keyspace import BUCKET, next_key, object_prefix, space, span, version_prefix
from storage.kms import KmsNotFound
from storage.lifecycle_clock import LifecycleClock
from storage.lifecycle_rules import (
    DEFAULT_MIN_SIZE_MODE,
    Action,
    abort_due,
    current_action,
    noncurrent_action,
)
from storage.metadata import MetadataStore
from storage.records import Bucket, ObjectVersion
from storage.version_places import prune as prune_places

if TYPE_CHECKING:
    from storage.multipart import MultipartService
    from storage.objects import ObjectService

PAGE = 500
KEYLESS_LOGGED = 4096  # versions remembered as logged keyless (then forgotten, logged again)

log = logging.getLogger("tessera.lifecycle")


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
    places_dropped: int = 0  # deleted versions' places past their retention
    errors: int = 0


@dataclass(frozen=True)
class Unchanged(DeleteConditions):
    """Delete only the version the pass decided on (same version id, write time and data
    identity), checked inside the delete's compare-and-swap: a PUT acknowledged after the
    pass read the key is never expired by it (nor hidden under a delete marker), even when
    it reuses the id "null" (a version-suspended bucket). For a delete by version id, `must`
    also holds: "noncurrent" (the target is still not the current version: a rollback made
    it current again) or "alone" (an expired delete marker is still current and the key's
    only version). `applied` records whether the delete went ahead."""

    seen: ObjectVersion | None = None
    must: str = ""
    applied: list[bool] = field(default_factory=list)

    def _same(self, target: ObjectVersion | None) -> bool:
        s = self.seen
        return target is not None and s is not None and (
            target.version_id, target.last_modified, target.identity_version) == (
            s.version_id, s.last_modified, s.identity_version)

    def applies(self, target: ObjectVersion | None) -> bool:
        ok = self._same(target)
        self.applied.append(ok)
        return ok

    def applies_version(self, target: ObjectVersion, current: ObjectVersion | None,
                        others: int) -> bool:
        ok = self._same(target)
        is_current = self._same(current)
        if self.must == "noncurrent":
            ok = ok and current is not None and not is_current
        elif self.must == "alone":
            ok = ok and is_current and others == 0
        self.applied.append(ok)
        return ok


def min_size_mode(b: Bucket) -> str:
    """The bucket's TransitionDefaultMinimumObjectSize (see storage.lifecycle_rules)."""
    return str(b.config.get("lifecycle_min_size") or DEFAULT_MIN_SIZE_MODE)


class LifecycleEngine:
    """One pass over every bucket with lifecycle rules, applying what is due (and dropping
    every bucket's deleted-version places past their retention)."""

    def __init__(self, meta: MetadataStore, objects: ObjectService, archive: ArchiveService,
                 multipart: MultipartService, clock: LifecycleClock,
                 place_retention_s: float = LifecycleSettings.version_place_retention_s,
                 ) -> None:
        self._meta = meta
        self._objects = objects
        self._archive = archive
        self._multipart = multipart
        self.clock = clock
        self.day_s = clock.configured
        self.place_retention_s = place_retention_s
        self._keyless: set[tuple[str, str, str]] = set()  # versions logged as keyless

    async def run_once(self, now: float | None = None) -> LifecycleReport:
        now = time.time() if now is None else now
        self.day_s = await self.clock.day_seconds()
        rep = LifecycleReport()
        start, end = space(BUCKET)
        while True:
            items = await self._meta.range(start, end, limit=PAGE)
            for item in items:
                b = Bucket.decode(item.value)
                b.revision = item.revision  # deletes compare it (BucketService.guard)
                rep.places_dropped += await prune_places(
                    self._meta, b.name, int((now - self.place_retention_s) * 1e9))
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
                act = current_action(rules, v, now, self.day_s, only_version=True,
                                     mode=min_size_mode(b))
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
                    act = current_action(rules, v, now, self.day_s, only_version=True,
                                     mode=min_size_mode(b))
                    if act is not None:
                        await self._apply(b, v, act, rep, current=True)
            if len(items) < PAGE:
                return
            start = next_key(items[-1].key)

    async def _key_versions(self, b: Bucket, rules: list[dict[str, Any]],
                            versions: list[ObjectVersion], now: float,
                            rep: LifecycleReport) -> None:
        cur = versions[0]
        act = current_action(rules, cur, now, self.day_s, only_version=len(versions) == 1,
                             mode=min_size_mode(b))
        if act is not None and await self._objects.is_latest(cur):
            await self._apply(b, cur, act, rep, current=True)
        for i, v in enumerate(versions[1:], start=1):
            since = versions[i - 1].last_modified
            act = noncurrent_action(rules, v, since, i - 1, now, self.day_s,
                                    mode=min_size_mode(b))
            if act is not None:
                await self._apply(b, v, act, rep, current=False)

    async def _remove(self, b: Bucket, v: ObjectVersion, cond: Unchanged) -> None:
        """Remove version `v` for good, refused while it is locked: retentions judged by the
        lock clock (`storage.lock_clock`), its nodes read only for one this process's clock
        says has ended (`object_lock.judged`; lifecycle never bypasses a lock)."""
        def run(now: float | None) -> Awaitable[object]:
            return self._objects.delete(b, v.key, v.version_id, conditions=cond,
                                        protect=lambda x: object_lock.check_delete(
                                            x.lock, False, now))

        await object_lock.judged(run, self._objects.lock_clock.now)

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
                cond = Unchanged(seen=v, must="alone")
                await self._remove(b, v, cond)
                rep.delete_markers_removed += bool(cond.applied and cond.applied[-1])
            elif current:  # unversioned: removed; versioned: under a delete marker
                cond = Unchanged(seen=v)
                await self._objects.delete(b, v.key, conditions=cond)
                rep.expired += bool(cond.applied and cond.applied[-1])
            else:
                cond = Unchanged(seen=v, must="noncurrent")
                await self._remove(b, v, cond)
                rep.noncurrent_expired += bool(cond.applied and cond.applied[-1])
        except KmsNotFound as exc:  # (a NotFound, but the version is there: its key is not)
            rep.errors += 1
            self._log_keyless(v, exc)
        except (NotFound, object_lock.ObjectLocked):
            return  # gone meanwhile, or kept by Object Lock (lifecycle never bypasses it)
        except StorageError:
            rep.errors += 1

    def _log_keyless(self, v: ObjectVersion, exc: KmsNotFound) -> None:
        """Log, once per version (per process, bounded), a transition that cannot be made
        because the KMS key sealing the version is deleted (a writer under a grant deleted
        its key, or was deleted): every pass counts it in `errors`, this says which."""
        ident = (v.bucket, v.key, v.version_id)
        if ident in self._keyless:
            return
        if len(self._keyless) >= KEYLESS_LOGGED:
            self._keyless.clear()
        self._keyless.add(ident)
        log.warning("lifecycle cannot transition %s/%s version %s: its KMS key is gone (%s)",
                    v.bucket, v.key, v.version_id, exc)

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
