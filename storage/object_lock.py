"""Object Lock: retention (GOVERNANCE / COMPLIANCE) and legal hold of object versions.

Pure rules over the records; the gateway parses requests, the object service stores.

- A bucket has Object Lock when created with it (versioning is then forced on and cannot be
  suspended) or when a configuration is put on a versioned bucket. Its configuration is
  `Bucket.config["object_lock"]` = `{"enabled": True, "rule": {"mode", "days" | "years"}}`.
- A version's lock is `ObjectVersion.lock` = `{"mode", "until" (epoch seconds),
  "legal_hold" ("ON" / "OFF")}`, set from the request headers at creation, else from the
  bucket's default retention (Days/Years counted from the creation time), and changed later
  by PutObjectRetention / PutObjectLegalHold.
- A version under a legal hold, or under a retention whose date is still ahead, cannot be
  deleted for good (a delete marker can still be added): AccessDenied. GOVERNANCE yields to
  `x-amz-bypass-governance-retention: true` from a caller with s3:BypassGovernanceRetention
  (the gateway decides who: gateway/s3/authz.py); COMPLIANCE yields to nobody.
- A retention can always be lengthened; shortening it, removing it or changing its mode
  needs the GOVERNANCE bypass, and is never possible under COMPLIANCE until it expires.
- Whether a retention has ended is judged by the lock clock (`storage.lock_clock`), never
  ahead of this process's clock: a rule given `now=None` judges by `time.time()` and raises
  `NeedsLockClock` only for a retention that clock says has ended (the one answer the lock
  clock can change); `judged` then runs the operation again with the lock clock's time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from storage.errors import AccessDenied, Conflict
from storage.keyspace import (
    BUCKET,
    next_key,
    object_prefix,
    space,
    span,
    version_prefix,
)
from storage.metadata import MetadataStore
from storage.records import Bucket, ObjectVersion, kms_owner

LockNow = Callable[[], Awaitable[float]]  # the time a retention's end is judged by
GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
DAY_S = 86400
YEAR_DAYS = 365
PAGE = 1000  # records per metadata read of the shred scan


class ObjectLocked(AccessDenied):
    """The version is protected by Object Lock (retention or legal hold)."""


class DeleteLocked(ObjectLocked):
    """A DeleteObject or DeleteObjects of a locked version: AWS answers it with its own
    message (gateway.s3.errors_map), where its other lock refusals are a plain AccessDenied."""


class NeedsLockClock(Exception):  # noqa: N818 - a signal to `judged`, not an error
    """A rule judging by this process's clock alone (`now=None`) found a retention ended:
    only the lock clock can say so. Raised before anything is written; `judged` catches it."""


T = TypeVar("T")


async def judged(run: Callable[[float | None], Awaitable[T]], lock_now: LockNow) -> T:
    """`run(None)`: retentions judged by this process's clock, which answers as the lock
    clock would for each one still running by it (the lock clock is never ahead of it), so
    the nodes' clocks are not read; if a retention it judged has ended by it (NeedsLockClock),
    `run` again with the lock clock's time."""
    try:
        return await run(None)
    except NeedsLockClock:
        return await run(await lock_now())


class TenantLocked(Conflict):
    """A tenant's keys still seal locked versions: it cannot be shredded (nor deleted, which
    deletes its KMS keys) while they are locked.
    `until`: when the lock that blocks ends (None: a legal hold, lifted only by a request)."""

    def __init__(self, tenant: str, until: float | None, what: str = COMPLIANCE) -> None:
        if until is None:
            why = ("under a legal hold; it cannot be shredded or deleted until the holds are "
                   "removed (PutObjectLegalHold OFF)")
        else:
            when = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))
            why = f"under {what} retention until {when}; it cannot be shredded or deleted before then"
            if what == GOVERNANCE:
                why += " unless the governance retention is bypassed explicitly"
        super().__init__(f"tenant {tenant!r} holds (or its keys seal) object versions {why}")
        self.until = until



async def shred_blocker(meta: MetadataStore, tenant: str, lock_now: LockNow,
                        bypass_governance: bool = False) -> TenantLocked | None:
    """Why the tenant's keys may not be destroyed now (a shred, or a delete, which deletes
    its KMS keys at once), or None: a version under a legal hold (the first found), else the
    latest COMPLIANCE retention still ahead, else (unless bypassed) the latest GOVERNANCE one.
    The versions destroyed are every one in the tenant's own buckets (sealed under its KEK)
    and, in every other tenant's bucket, those sealed with its KMS keys (written there under
    a grant: `records.kms_owner`), so every Object Lock bucket is read; destroying them is
    a delete of each. `lock_now` is asked once, at the first of those versions with a
    retention (none: never asked, so a tenant without one is shredded while the nodes'
    clocks cannot be read)."""
    latest: dict[str, float] = {}
    asked: list[float] = []

    async def now() -> float:
        if not asked:
            asked.append(await lock_now())
        return asked[0]

    start, end = space(BUCKET)
    while True:
        buckets = await meta.range(start, end, limit=PAGE)
        for item in buckets:
            b = Bucket.decode(item.value)
            if bucket_lock(b.config) is None:
                continue
            if await _bucket_blocker(meta, b.name, None if b.tenant == tenant else tenant,
                                     now, latest):
                return TenantLocked(tenant, None)
        if len(buckets) < PAGE:
            break
        start = next_key(buckets[-1].key)
    if COMPLIANCE in latest:
        return TenantLocked(tenant, latest[COMPLIANCE], COMPLIANCE)
    if GOVERNANCE in latest and not bypass_governance:
        return TenantLocked(tenant, latest[GOVERNANCE], GOVERNANCE)
    return None


async def _bucket_blocker(meta: MetadataStore, bucket: str, kms_tenant: str | None,
                          now: LockNow, latest: dict[str, float]) -> bool:
    """Scan a bucket's versions (only those sealed with `kms_tenant`'s KMS keys, unless
    None): True at a legal hold; else the latest retention still ahead, per mode, into
    `latest`. History records, and current ones: a version written before versioning was
    enabled (the null version) has only its current record, and can be locked later."""
    for prefix in (version_prefix(bucket), object_prefix(bucket)):
        start, end = span(prefix)
        while True:
            batch = await meta.range(start, end, limit=PAGE)
            for rec in batch:
                v = ObjectVersion.decode(rec.value)
                if kms_tenant is not None and kms_owner(v) != kms_tenant:
                    continue
                if v.lock.get("legal_hold") == "ON":
                    return True
                if v.lock.get("mode") and retention_active(v.lock, await now()):
                    mode = str(v.lock["mode"])
                    latest[mode] = max(latest.get(mode, 0.0), float(v.lock["until"]))
            if len(batch) < PAGE:
                break
            start = next_key(batch[-1].key)
    return False


def bucket_lock(config: dict[str, Any]) -> dict[str, Any] | None:
    """The bucket's Object Lock configuration, or None when the bucket has none."""
    lock = config.get("object_lock")
    return lock if isinstance(lock, dict) and lock.get("enabled") else None


def default_retention(config: dict[str, Any], now: float) -> dict[str, Any]:
    """The lock a new version gets from the bucket's default rule (empty: none)."""
    lock = bucket_lock(config)
    rule = (lock or {}).get("rule")
    if not rule:
        return {}
    days = int(rule.get("days") or 0) + YEAR_DAYS * int(rule.get("years") or 0)
    return {"mode": rule["mode"], "until": now + days * DAY_S}


async def initial(config: dict[str, Any], requested: dict[str, Any], start: LockNow,
                  ) -> dict[str, Any]:
    """A new version's lock: what the request set, else the bucket's default retention,
    counted from `start()` (asked only then: `LockClock.floor`, never earlier than the
    nodes' time, so a slow gateway clock does not end a default lock early)."""
    if requested.get("mode") or not (bucket_lock(config) or {}).get("rule"):
        return requested
    return {**default_retention(config, await start()), **requested}


def retention_active(lock: dict[str, Any], now: float | None) -> bool:
    """Whether the lock's retention is still ahead of `now` (None: see NeedsLockClock)."""
    if not lock.get("mode"):
        return False
    until = float(lock.get("until") or 0)
    if now is None:
        if until > time.time():
            return True  # by the lock clock too (never ahead of this one)
        raise NeedsLockClock
    return until > now


def check_delete(lock: dict[str, Any], bypass: bool, now: float | None,
                 refusal: type[ObjectLocked] = ObjectLocked) -> None:
    """Raise `refusal` unless a version with `lock` may be deleted for good (`now`: see
    `retention_active`; not needed for a bypassed GOVERNANCE retention)."""
    if lock.get("legal_hold") == "ON":
        raise refusal("the object version is under a legal hold")
    if lock.get("mode") == GOVERNANCE and bypass:
        return
    if retention_active(lock, now):
        raise refusal(f"the object version is under retention until {lock['until']}")


def check_retention_change(lock: dict[str, Any], mode: str | None, until: float | None,
                           bypass: bool, now: float | None) -> None:
    """Raise ObjectLocked unless the retention may become (mode, until); None = removed.
    Lengthening, or a bypassed GOVERNANCE one, judges no time (`now`: see
    `retention_active`)."""
    old_mode = lock.get("mode")
    if not old_mode:
        return
    loosened = (mode is None or mode != old_mode or until is None
                or until < float(lock.get("until") or 0))
    if not loosened or (old_mode == GOVERNANCE and bypass):
        return
    if retention_active(lock, now):
        raise ObjectLocked("the retention of this object version cannot be shortened, "
                           "removed or changed in mode")


def with_retention(lock: dict[str, Any], mode: str | None, until: float | None,
                   ) -> dict[str, Any]:
    out = {k: v for k, v in lock.items() if k not in ("mode", "until")}
    if mode is not None and until is not None:
        out["mode"], out["until"] = mode, until
    return out
