"""The archive tier: transitions, restores and their expiry (the storage-class policy they
follow, and what a GET reads, is `storage/archive_classes.py`).

GLACIER and DEEP_ARCHIVE versions keep their head (the manifest: metadata, tags, listing
entry) hot while their data sits on archive nodes under the archive profile, compressed
then encrypted. Their data is readable only through a restored copy: RestoreObject queues
a job (`AR`), the restore worker copies the plaintext into a temporary STANDARD stripe under
a fresh data key once the tier's latency has passed, and the expiry worker (`AE`) retires
that copy when it expires. SSE-C versions are moved and copied without their key: their
sealed segments are re-erasure-coded as they are (same data key, identity, part numbers and
segment boundaries, so the segments' associated data still holds), never compressed. Every state change is a compare-and-swap on every record that
holds the version (current `O` and history `V`), together with its queue entries.

Clock: a "day" lasts `ArchiveSettings.day_seconds`; restore expiry is completion + Days
rounded up to the next day boundary (a multiple of the day length since the epoch, which is
midnight UTC for real days), and tier latencies are scaled by `day_seconds / 86400`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from storage import archive_staging, inline_bodies, retiring
from storage.archive_classes import (
    RESTORED_CLASS,
    TIERS,
    is_archived,
    latency_s,
    may_transition,
    restore_expiry,
)
from storage.config import Config
from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.datakeys import SSEC_HMAC
from storage.errors import Conflict, InvalidInput, KeyUnavailable, StorageError
from storage.keyspace import (
    OBJECT,
    RESTORE_EXPIRY,
    RESTORE_QUEUE,
    archive_job_key,
    archive_job_of,
    gc_key,
    space,
    stripe_index_key,
)
from storage.keyspace import unpack as unpack_key
from storage.kms import KmsNotFound
from storage.metadata import Item, MetadataStore, Txn
from storage.metadata.fence import cleanup_outside_step
from storage.object_edits import version_records
from storage.objects import ObjectService, new_version_id
from storage.records import Bucket, ObjectVersion, PartLayout, pack, unpack
from storage.tenants import TenantService
from storage.version_retire import restored_stripes

RETRY_S = 5.0

log = logging.getLogger("tessera.archive")


class NotArchived(InvalidInput):
    """RestoreObject on a version that is not in an archive class."""


class RestoreInProgress(Conflict):
    """A restore of this version is already running (and the request is not faster)."""


class ExpeditedUnavailable(StorageError):
    """Expedited retrieval is not offered (DEEP_ARCHIVE never offers it)."""


class Outcome(Enum):
    ACCEPTED = 202  # a restore job was queued (or upgraded to a faster tier)
    ALREADY_RESTORED = 200  # the restored copy's expiry was extended


def _ident_key(name: str, when: float, v: ObjectVersion) -> bytes:
    return archive_job_key(name, int(when * 1e9), v.bucket, v.key, v.version_id)


def _retire(bucket: str, key: str, stripes: list[dict[str, Any]]
            ) -> tuple[dict[bytes, bytes], list[bytes], list[bytes]]:
    """A restored copy's stripes retired: their GC entries, their `X` keys to delete; or,
    past `retiring.INLINE_PARTS` stripes, a retirement marker (etcd's txn limit), whose key
    is returned last for `retiring.finish_now`."""
    if len(stripes) > retiring.INLINE_PARTS:
        marker, value = retiring.stripes_marker(
            bucket, key, [(s["stripe_id"], s["nodes"]) for s in stripes], time.time_ns())
        return {marker: value}, [], [marker]
    puts = {gc_key(time.time_ns(), s["stripe_id"]): pack({"nodes": s["nodes"]})
            for s in stripes if s["nodes"]}
    return puts, [stripe_index_key(s["stripe_id"]) for s in stripes], []


@dataclass
class Change:
    """What a mutation does to a version's records, plus queue/index keys in the same txn."""

    fields: dict[str, Any] = field(default_factory=dict)
    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)
    compares: dict[bytes, int] = field(default_factory=dict)  # (fresh stripes' tombstones)
    result: Any = None


@dataclass
class ArchiveStats:
    transitioned: int = 0
    restores_completed: int = 0
    restores_failed: int = 0  # jobs ended because their key is gone (`_fail`)
    restores_expired: int = 0


class ArchiveService:
    def __init__(self, cfg: Config, meta: MetadataStore, tenants: TenantService,
                 objects: ObjectService) -> None:
        self._cfg = cfg
        self._meta = meta
        self._tenants = tenants
        self._objects = objects
        self.settings = cfg.archive
        self.stats = ArchiveStats()
        self._retry_at: dict[bytes, float] = {}
        # (queue) -> when its earliest entry not yet due falls due, as of the last pass (ns;
        # None: none seen): the restore worker sleeps until then on etcd
        self.next_due_ns: dict[str, int | None] = {RESTORE_QUEUE: None, RESTORE_EXPIRY: None}

    # records of one version ----------------------------------------------------------------

    async def _records(self, bucket: str, key: str, version_id: str | None,
                       ) -> list[tuple[Item, ObjectVersion]]:
        return await version_records(self._meta, bucket, key, version_id)

    async def mutate(self, bucket: str, key: str, version_id: str | None,
                     fn: Callable[[ObjectVersion], Change | None],
                     holds: Callable[[], Awaitable[bool]] | None = None,
                     ) -> tuple[ObjectVersion, Any] | None:
        """Apply `fn`'s change to every record of a version with compare-and-swap (retried).

        Returns (the changed version, fn's result), or None if the version does not exist,
        `fn` declined (returned None), or `holds` (asked after a refused attempt: whether
        the change's own compares can still hold) says no.
        """
        while True:
            records = await self._records(bucket, key, version_id)
            if not records:
                return None
            change = fn(records[0][1])
            if change is None:
                return None
            compares = dict(change.compares)
            puts = dict(change.puts)
            for item, v in records:
                for name, value in change.fields.items():
                    setattr(v, name, value)
                compares[item.key] = item.revision
                puts[item.key] = v.encode()
            if await self._meta.txn(Txn(compares=compares, puts=puts,
                                        deletes=tuple(change.deletes))):
                return records[0][1], change.result
            await self._objects.recheck_nodes(compares)  # (a node named removed meanwhile)
            if holds is not None and not await holds():
                return None

    async def _swap_in(self, bucket: str, key: str, version_id: str | None,
                       fn: Callable[[ObjectVersion, Change], Change | None],
                       new_parts: list[PartLayout], state: str,
                       ) -> tuple[ObjectVersion, Any] | None:
        """`mutate` for a change that puts freshly written `new_parts` in, indexed as
        `state` ("live": the version's parts; "restored": its restored copy).

        `fn(cur, ch)` fills `ch` (its index entries already in it) or declines. Up to
        `retiring.INLINE_PARTS` parts are indexed in the swap's own transaction (1 put + 1
        compare each). More are staged first under a marker (`storage/archive_staging.py`),
        which the swap compares and deletes: one small transaction whatever the part count
        (etcd's `--max-txn-ops`).

        When the swap is declined or raises (etcd refusing the txn, the store unreachable, a
        cancellation), the copy is discarded at once rather than left to the day-long
        orphan sweep, which a retried lifecycle pass would feed a whole copy each hour:
        staged, by undoing the staging (a marker gone means the swap applied: nothing is
        undone); else through `discard_parts`, which spares a stripe indexed by a swap that
        applied all the same, and, after a raise, keeps the GC grace: the version may have
        been removed since, its entries with it."""
        def entry(p: PartLayout) -> dict[str, Any]:
            return {"state": state, "bucket": bucket, "key": key, "version": version_id,
                    "part": p.number}

        staged = len(new_parts) > retiring.INLINE_PARTS
        marker: Item | None = None

        def change(cur: ObjectVersion) -> Change | None:
            ch = Change()
            if marker is not None:
                ch.compares[marker.key] = marker.revision
                ch.deletes.append(marker.key)
            else:
                for p in new_parts:
                    self._objects.index_part(ch.puts, p, entry(p), ch.compares)
            return fn(cur, ch)

        def index(puts: dict[bytes, bytes], p: PartLayout, compares: dict[bytes, int]) -> None:
            assert marker is not None
            self._objects.index_part(puts, p, {**entry(p), "staging": marker.key}, compares)

        try:
            if staged:
                marker = await archive_staging.begin(self._meta, new_parts)
                await archive_staging.stage(self._meta, marker, new_parts, index,
                                            self._objects.recheck_nodes)
            res = await self.mutate(bucket, key, version_id, change, None if marker is None
                                    else lambda: archive_staging.live(self._meta, marker))
        except BaseException:
            await self._unstage(new_parts, marker, staged, raised=True)
            raise
        if res is None:
            await self._unstage(new_parts, marker, staged, raised=False)
        return res

    async def _unstage(self, parts: list[PartLayout], marker: Item | None, staged: bool,
                       raised: bool) -> None:
        """Discard a copy whose swap did not happen (`_swap_in`), shielded from the
        caller's cancellation and outside any worker step's fence: a stale worker's copy
        is cleaned up too, and a second cancel does not stop the cleanup half way."""
        if not staged:
            await self._objects.discard_parts(
                parts, self._objects.gc_grace_s if raised else 0.0)
        elif marker is not None:  # (staging killed before its marker: orphans only)
            await cleanup_outside_step(archive_staging.undo(
                self._meta, marker.key, self._cfg.repair.orphan_grace_s))
        else:
            await self._objects.discard_parts(parts)

    # RestoreObject -------------------------------------------------------------------------

    async def request_restore(self, b: Bucket, key: str, version_id: str | None, days: int,
                              tier: str) -> tuple[Outcome, ObjectVersion]:
        """Queue, upgrade or extend a restore, as S3 does (see the module docstring)."""
        if tier not in TIERS:
            raise InvalidInput(f"unknown tier {tier!r}")
        v0 = await self._objects.head(b, key, version_id)
        now = time.time()
        day = self.settings.day_seconds

        def decide(v: ObjectVersion) -> Change:
            if not is_archived(v):
                raise NotArchived(f"{v.storage_class} objects are not archived")
            if tier == "Expedited" and v.storage_class == "DEEP_ARCHIVE":
                raise ExpeditedUnavailable("no Expedited retrieval for DEEP_ARCHIVE")
            r = dict(v.restore)
            ch = Change()
            if r.get("state") == "ongoing":
                due = now + latency_s(self.settings, v.storage_class, tier)
                if TIERS.index(tier) >= TIERS.index(r["tier"]) or due >= float(r["due"]):
                    raise RestoreInProgress("a restore of this object is already running")
                ch.deletes.append(r["queue_key"])
                qk = _ident_key(RESTORE_QUEUE, due, v)
                r.update(tier=tier, due=due, queue_key=qk)
                ch.puts[qk] = pack({"tenant": v.tenant})
                ch.fields["restore"], ch.result = r, Outcome.ACCEPTED
                return ch
            if r.get("state") == "done" and float(r.get("expiry", 0)) > now:
                expiry = restore_expiry(now, days, day)
                ek = _ident_key(RESTORE_EXPIRY, expiry, v)
                if ek != r["expiry_key"]:
                    ch.deletes.append(r["expiry_key"])
                    ch.puts[ek] = pack({"stripes": restored_stripes(r)})
                r.update(days=days, expiry=expiry, expiry_key=ek)
                ch.fields["restore"], ch.result = r, Outcome.ALREADY_RESTORED
                return ch
            due = now + latency_s(self.settings, v.storage_class, tier)
            qk = _ident_key(RESTORE_QUEUE, due, v)
            ch.puts[qk] = pack({"tenant": v.tenant})
            ch.fields["restore"] = {"state": "ongoing", "tier": tier, "days": days,
                                    "requested": now, "due": due, "queue_key": qk}
            ch.result = Outcome.ACCEPTED
            return ch

        res = await self.mutate(b.name, key, v0.version_id, decide)
        if res is None:
            from storage.errors import ObjectNotFound

            raise ObjectNotFound(b.name, key, version_id)
        return res[1], res[0]

    # the restore worker's work -------------------------------------------------------------

    async def complete_due_restores(self, limit: int = 8) -> int:
        """Make the restored copy of up to `limit` jobs whose latency has passed; returns
        jobs done. A job that failed waits for its retry time and is tried after the
        others: the read reaches past the failing jobs, so they never hold back the jobs
        queued behind them (a job whose key is gone ends: `_fail`)."""
        now = time.time()
        items = await self._due(RESTORE_QUEUE, int(now * 1e9), limit + len(self._retry_at))
        keys = {i.key for i in items}
        for k in [k for k, t in self._retry_at.items() if t <= now and k not in keys]:
            del self._retry_at[k]  # left the queue another way (or past this read): a past
            # retry time kept would make next_work_ns due for ever (polling each idle_s)
        fresh = [i for i in items if i.key not in self._retry_at]
        again = [i for i in items if self._retry_at.get(i.key, now + 1) <= now]
        done = 0
        for item in (fresh + again)[:limit]:
            try:
                if await self._complete(item):
                    done += 1
                    self._retry_at.pop(item.key, None)
                else:  # declined: a stale entry was dropped (pruned next pass), or the
                    # version changed under the copy (a transition moved its data) and the
                    # job, still queued and due, is retried next pass; without a retry time
                    # a worker woken by watches slept until WATCHED_MAX_S (30 s) before it
                    self._retry_at[item.key] = now
            except (KmsNotFound, KeyUnavailable) as exc:  # its key is gone for good
                self._retry_at.pop(item.key, None)
                await self._fail(item, exc)
            except StorageError:  # a node, a disabled key...: tried again after RETRY_S
                self._retry_at[item.key] = now + RETRY_S
        return done

    async def _fail(self, item: Item, exc: StorageError) -> None:
        """End a restore job that can never succeed (the key its version is sealed with is
        destroyed: the writer's KMS key deleted, or a tenant shredded): the version's restore
        becomes `failed` (with the reason; no longer ongoing, so HEAD shows no
        x-amz-restore and a new RestoreObject queues again), its queue entry goes, and it is
        counted (`stats.restores_failed`) and logged, once."""
        bucket, key, vid = archive_job_of(item.key)
        now = time.time()

        def fail(cur: ObjectVersion) -> Change | None:
            if cur.restore.get("queue_key") != item.key:
                return None
            r = {k: v for k, v in cur.restore.items() if k not in ("queue_key", "due")}
            ch = Change()
            ch.fields["restore"] = {**r, "state": "failed", "failed": now, "error": str(exc)}
            ch.deletes.append(item.key)
            return ch

        if await self.mutate(bucket, key, vid, fail) is None:  # a stale entry: dropped
            await self._meta.txn(Txn(compares={item.key: item.revision}, deletes=(item.key,)))
            return
        self.stats.restores_failed += 1
        log.warning("restore of %s/%s version %s failed for good: %s", bucket, key, vid, exc)

    async def _due(self, queue: str, now_ns: int, limit: int) -> list[Item]:
        """The entries of a time-ordered queue due at `now_ns` (up to `limit`), read from
        the queue's start so that the first entry not yet due comes with them in the same
        read: its due time is kept in `next_due_ns`."""
        items = await self._meta.range(*space(queue), limit=limit)
        due = [i for i in items if int(unpack_key(i.key)[1]) <= now_ns]
        self.next_due_ns[queue] = (int(unpack_key(items[len(due)].key)[1])
                                   if len(due) < len(items) else None)
        return due

    def next_work_ns(self) -> int | None:
        """When the restore worker has work next, as its last pass saw it (a queued entry
        falling due, a failed job's retry; None: nothing waiting)."""
        times = [t for t in self.next_due_ns.values() if t is not None]
        times += [int(t * 1e9) for t in self._retry_at.values()]
        return min(times) if times else None

    async def _complete(self, item: Item) -> bool:
        bucket, key, vid = archive_job_of(item.key)
        records = await self._records(bucket, key, vid)
        v = records[0][1] if records else None
        if v is None or v.restore.get("queue_key") != item.key:
            await self._meta.txn(Txn(compares={item.key: item.revision}, deletes=(item.key,)))
            return False
        age = self._objects.write_age()
        if SSEC_HMAC in v.sse:
            new_parts = await self._rewrite_parts(v, v, None, RESTORED_CLASS, False)
            copy: dict[str, Any] = {"parts": [dataclasses.asdict(p) for p in new_parts]}
        else:
            new_parts, copy = await self._copy_hot(v)
        stripes = [p.stripe_id for p in v.parts]

        def finish(cur: ObjectVersion, ch: Change) -> Change | None:
            if cur.restore.get("queue_key") != item.key or \
                    [p.stripe_id for p in cur.parts] != stripes:
                return None
            age.check()  # too late: its shards may be swept; retried (RETRY_S)
            now = time.time()
            expiry = restore_expiry(now, int(cur.restore.get("days", 1)),
                                    self.settings.day_seconds)
            r = {**cur.restore, **copy, "state": "done", "completed": now, "expiry": expiry}
            r.pop("queue_key", None)
            r.pop("due", None)
            ek = _ident_key(RESTORE_EXPIRY, expiry, cur)
            r["expiry_key"] = ek
            ch.fields["restore"] = r
            ch.deletes.append(item.key)
            ch.puts[ek] = pack({"stripes": restored_stripes(r)})
            return ch

        res = await self._swap_in(bucket, key, vid, finish, new_parts, "restored")
        if res is None:
            return False
        self.stats.restores_completed += 1
        return True

    async def _copy_hot(self, v: ObjectVersion) -> tuple[list[PartLayout], dict[str, Any]]:
        """Copy the plaintext into STANDARD stripes under a fresh data key (an SSE-KMS
        version's wrapped by its KMS key again, so the copy stays bound to that key)."""
        kek_version, kek = await self._tenants.kek(v.tenant)
        dek = keys.new_dek()
        shadow = dataclasses.replace(v, identity_version=new_version_id(), parts=[])
        self._objects.data_keys.seal_dek(shadow, kek, dek, None,
                                         await self._objects.data_keys.kms_wrapping_for(shadow))
        wrapped = shadow.dek
        parts = await self._rewrite_parts(v, shadow, SegmentCipher(dek), RESTORED_CLASS, False)
        return parts, {"parts": [dataclasses.asdict(p) for p in parts], "dek": wrapped,
                       "identity_version": shadow.identity_version, "kek_version": kek_version}

    async def _rewrite_parts(self, src: ObjectVersion, target: ObjectVersion,
                             cipher: SegmentCipher | None, storage_class: str, compress: bool,
                             ) -> list[PartLayout]:
        """Write each part of `src` again (same numbers, ETags, checksums) for `target`.

        With no `cipher` (SSE-C, `target` is `src`) each part's sealed segments are
        re-coded as they are under the new profile: no key is needed and no compression is
        possible (it must come before encryption); a compressed part stays compressed.
        """
        written: list[PartLayout] = []
        offset = 0
        try:
            for p in src.parts:
                size = p.plaintext_size
                body: AsyncIterator[bytes]
                if cipher is None:
                    body = self._objects.read_sealed(src, p)
                    lay = await self._objects.write_part(target, p.number, None, body, [],
                                                         p.size, storage_class,
                                                         segment_size=p.segment_size)
                    lay.compressed, lay.plain_size = p.compressed, p.plain_size
                else:
                    body = self._objects.read(src, offset, offset + size)
                    lay = await self._objects.write_part(target, p.number, cipher, body, [],
                                                         size, storage_class, compress=compress)
                lay.etag, lay.checksums = p.etag, dict(p.checksums)
                written.append(lay)
                offset += size
        except BaseException:
            await self._objects.discard_parts(written)
            raise
        return written

    async def expire_restored(self, limit: int = 32) -> int:
        """Retire restored copies whose expiry has passed; returns copies retired."""
        now = time.time()
        items = await self._due(RESTORE_EXPIRY, int(now * 1e9), limit)
        for item in items:
            bucket, key, vid = archive_job_of(item.key)

            markers: list[bytes] = []

            def clear(v: ObjectVersion, key_: bytes = item.key,
                      markers: list[bytes] = markers) -> Change | None:
                if v.restore.get("expiry_key") != key_:
                    return None
                # the copy's nodes as the record under compare names them (repair may have
                # moved a shard since the restore wrote `AE`)
                puts, dels, markers[:] = _retire(v.bucket, v.key, restored_stripes(v.restore))
                return Change(fields={"restore": {}}, puts=puts, deletes=[key_, *dels])

            if await self.mutate(bucket, key, vid, clear) is None:
                # the version is gone or has moved on: only the copy's stripes remain
                gc_puts, x_deletes, markers[:] = _retire(
                    bucket, key, unpack(item.value).get("stripes", []))
                if not await self._meta.txn(Txn(compares={item.key: item.revision},
                                                puts=gc_puts, deletes=(item.key, *x_deletes))):
                    markers.clear()
            await retiring.finish_now(self._meta, markers)
            self.stats.restores_expired += 1
        return len(items)

    # transitions ---------------------------------------------------------------------------

    async def transition(self, v: ObjectVersion, storage_class: str) -> bool:
        """Move a version's data to `storage_class`'s profile (re-encoded, compressed when
        the profile says so) and relabel it; the head stays where it is. An SSE-C version's
        ciphertext is re-coded as it is (no key here, so no compression). False if the
        version changed meanwhile or is not moved."""
        if v.delete_marker or not may_transition(v.storage_class, storage_class):
            return False
        profile = self._cfg.profile_for_class(storage_class)
        ssec = SSEC_HMAC in v.sse
        same = all(p.profile == profile.name and (ssec or p.compressed == profile.compress)
                   for p in v.parts)
        stripes = [p.stripe_id for p in v.parts]
        new_parts: list[PartLayout] = []
        age = self._objects.write_age()
        # `restore` is not among the fields: a restore job or restored copy of the version
        # is its own state (its own stripes and data key, or re-read from the moved parts
        # when the job runs) and survives the move, compare-and-swapped with it
        fields: dict[str, Any] = {"storage_class": storage_class}
        if ssec and not same:
            new_parts = await self._rewrite_parts(v, v, None, storage_class, False)
            fields["parts"] = new_parts  # same data key and identity: the AAD still holds
        elif not same:
            kek_version, kek = await self._tenants.kek(v.tenant)
            dek = keys.new_dek()
            target = dataclasses.replace(v, identity_version=new_version_id(), parts=[])
            # an SSE-KMS version's new data key is wrapped by its KMS key again, then the KEK
            self._objects.data_keys.seal_dek(target, kek, dek, None,
                                             await self._objects.data_keys.kms_wrapping_for(target))
            wrapped = target.dek
            new_parts = await self._rewrite_parts(v, target, SegmentCipher(dek), storage_class,
                                                  profile.compress)
            fields.update(parts=new_parts, dek=wrapped, kek_version=kek_version,
                          identity_version=target.identity_version)

        markers: list[bytes] = []  # the old stripes' retirement marker, once swapped

        def swap(cur: ObjectVersion, ch: Change) -> Change | None:
            if [p.stripe_id for p in cur.parts] != stripes or cur.storage_class != v.storage_class:
                return None
            if not same and age.expired():  # its first shards may have been swept: stay put
                log.warning("transition of %s/%s to %s not swapped: copy outlived the "
                            "orphan grace", cur.bucket, cur.key, storage_class)
                return None
            ch.fields.update(fields)
            markers.clear()
            if not same:
                due = time.time_ns() + int(self._objects.gc_grace_s * 1e9)
                if len(cur.parts) > retiring.INLINE_PARTS:  # etcd's txn limit: in steps
                    marker, value = retiring.version_marker(cur, due)
                    ch.puts[marker] = value
                    markers.append(marker)
                else:
                    for p in cur.parts:
                        if p.stripe_id and p.nodes:
                            ch.puts[gc_key(due, p.stripe_id)] = pack({"nodes": p.nodes})
                            ch.deletes.append(stripe_index_key(p.stripe_id))
                inline_bodies.retire(cur, ch.deletes)  # its parts are replaced
            return ch

        if await self._swap_in(v.bucket, v.key, v.version_id, swap, new_parts, "live") is None:
            return False
        await retiring.finish_now(self._meta, markers)
        self.stats.transitioned += 1
        return True

    # figures -------------------------------------------------------------------------------

    async def pending_restores(self, limit: int = 10000) -> int:
        return len(await self._meta.range(*space(RESTORE_QUEUE), limit=limit))

    async def restored_copies(self, limit: int = 10000) -> int:
        return len(await self._meta.range(*space(RESTORE_EXPIRY), limit=limit))


async def class_figures(meta: MetadataStore, scan_limit: int = 5000) -> dict[str, Any]:
    """Bytes and objects per storage class (a bounded scan of current versions), restore
    jobs pending and restored copies alive: the archive part of `tessera status`."""
    items = await meta.range(*space(OBJECT), limit=scan_limit + 1)
    by_class: dict[str, dict[str, int]] = {}
    for item in items[:scan_limit]:
        v = ObjectVersion.decode(item.value)
        if v.delete_marker:
            continue
        row = by_class.setdefault(v.storage_class, {"objects": 0, "bytes": 0,
                                                    "stored_bytes": 0})
        row["objects"] += 1
        row["bytes"] += v.size
        row["stored_bytes"] += sum(p.size for p in v.parts)
    pending = len(await meta.range(*space(RESTORE_QUEUE), limit=100_000))
    copies = len(await meta.range(*space(RESTORE_EXPIRY), limit=100_000))
    return {"classes": dict(sorted(by_class.items())), "scanned_truncated":
            len(items) > scan_limit, "restores_pending": pending, "restored_copies": copies}
