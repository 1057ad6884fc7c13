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
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from storage.errors import AccessDenied, Conflict
from storage.keyspace import (
    bucket_key,
    next_key,
    object_prefix,
    span,
    tenant_bucket_prefix,
    unpack,
    version_prefix,
)
from storage.metadata import MetadataStore
from storage.records import Bucket, ObjectVersion

GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
DAY_S = 86400
YEAR_DAYS = 365


class ObjectLocked(AccessDenied):
    """The version is protected by Object Lock (retention or legal hold)."""


class DeleteLocked(ObjectLocked):
    """A DeleteObject or DeleteObjects of a locked version: AWS answers it with its own
    message (gateway.s3.errors_map), where its other lock refusals are a plain AccessDenied."""


class TenantLocked(Conflict):
    """A tenant still holds locked versions: it cannot be shredded while they are locked.
    `until`: when the lock that blocks ends (None: a legal hold, lifted only by a request)."""

    def __init__(self, tenant: str, until: float | None, what: str = COMPLIANCE) -> None:
        if until is None:
            why = ("under a legal hold; it cannot be shredded until the holds are removed "
                   "(PutObjectLegalHold OFF)")
        else:
            when = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))
            why = f"under {what} retention until {when}; it cannot be shredded before then"
            if what == GOVERNANCE:
                why += " unless the governance retention is bypassed explicitly"
        super().__init__(f"tenant {tenant!r} holds object versions {why}")
        self.until = until


LockNow = Callable[[], Awaitable[float]]  # the time a retention's end is judged by


async def shred_blocker(meta: MetadataStore, tenant: str, lock_now: LockNow,
                        bypass_governance: bool = False) -> TenantLocked | None:
    """Why the tenant may not be shredded now, or None: a version under a legal hold (the
    first found), else the latest COMPLIANCE retention still ahead, else (unless bypassed)
    the latest GOVERNANCE one. Shredding destroys every version, so it is a delete of each.
    `lock_now` is asked once, at the first bucket with Object Lock (none: never asked, so
    a tenant without locks is shredded while the nodes' clocks cannot be read)."""
    latest: dict[str, float] = {}
    now: float | None = None
    for entry in await meta.range(*span(tenant_bucket_prefix(tenant)), limit=100000):
        name = unpack(entry.key)[2]
        item = await meta.get(bucket_key(name))
        if item is None or bucket_lock(Bucket.decode(item.value).config) is None:
            continue
        if now is None:
            now = await lock_now()
        # history records, and current ones: a version written before versioning was
        # enabled (the null version) has only its current record, and can be locked later
        for prefix in (version_prefix(name), object_prefix(name)):
            start, end = span(prefix)
            while True:
                batch = await meta.range(start, end, limit=1000)
                for rec in batch:
                    lock = ObjectVersion.decode(rec.value).lock
                    if lock.get("legal_hold") == "ON":
                        return TenantLocked(tenant, None)
                    if retention_active(lock, now):
                        mode = str(lock["mode"])
                        latest[mode] = max(latest.get(mode, 0.0), float(lock["until"]))
                if len(batch) < 1000:
                    break
                start = next_key(batch[-1].key)
    if COMPLIANCE in latest:
        return TenantLocked(tenant, latest[COMPLIANCE], COMPLIANCE)
    if GOVERNANCE in latest and not bypass_governance:
        return TenantLocked(tenant, latest[GOVERNANCE], GOVERNANCE)
    return None


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


def initial(config: dict[str, Any], requested: dict[str, Any], now: float,
            ) -> dict[str, Any]:
    """A new version's lock: what the request set, else the bucket's default retention."""
    if requested.get("mode"):
        return requested
    return {**default_retention(config, now), **requested}


def retention_active(lock: dict[str, Any], now: float) -> bool:
    return bool(lock.get("mode")) and float(lock.get("until") or 0) > now


def check_delete(lock: dict[str, Any], bypass: bool, now: float,
                 refusal: type[ObjectLocked] = ObjectLocked) -> None:
    """Raise `refusal` unless a version with `lock` may be deleted for good."""
    if lock.get("legal_hold") == "ON":
        raise refusal("the object version is under a legal hold")
    if retention_active(lock, now):
        if lock["mode"] == COMPLIANCE or not bypass:
            raise refusal(f"the object version is under retention until {lock['until']}")


def check_retention_change(lock: dict[str, Any], mode: str | None, until: float | None,
                           bypass: bool, now: float) -> None:
    """Raise ObjectLocked unless the retention may become (mode, until); None = removed."""
    if not retention_active(lock, now):
        return
    old_mode, old_until = lock["mode"], float(lock["until"])
    loosened = mode is None or mode != old_mode or until is None or until < old_until
    if not loosened:
        return
    if old_mode == COMPLIANCE or not bypass:
        raise ObjectLocked("the retention of this object version cannot be shortened, "
                           "removed or changed in mode")


def with_retention(lock: dict[str, Any], mode: str | None, until: float | None,
                   ) -> dict[str, Any]:
    out = {k: v for k, v in lock.items() if k not in ("mode", "until")}
    if mode is not None and until is not None:
        out["mode"], out["until"] = mode, until
    return out
