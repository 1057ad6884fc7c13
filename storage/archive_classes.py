"""Storage-class policy of the archive tier: which classes are archived, AWS's transition
waterfall, restore tier latencies, restore expiry on day boundaries, and which version a GET
streams (the version itself, its restored copy, or none).

Pure functions on records and settings, apart from `storage/archive.py` (the service that
moves data and runs restores) so request handlers, lifecycle rules and workers can ask the
policy without the service.
"""

from __future__ import annotations

import dataclasses
import math
import time

from storage.config import ArchiveSettings
from storage.records import ObjectVersion, PartLayout

ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
TIERS = ("Expedited", "Standard", "Bulk")
RESTORED_CLASS = "STANDARD"  # the class (profile) of a temporary restored copy

# colder is larger: a lifecycle transition only ever moves an object down AWS's waterfall,
# STANDARD -> STANDARD_IA -> INTELLIGENT_TIERING -> ONEZONE_IA -> GLACIER_IR -> GLACIER ->
# DEEP_ARCHIVE, except ONEZONE_IA -> GLACIER_IR, which AWS does not support
CLASS_RANK = {"STANDARD": 0, "REDUCED_REDUNDANCY": 0, "STANDARD_IA": 1,
              "INTELLIGENT_TIERING": 2, "ONEZONE_IA": 3, "GLACIER_IR": 4, "GLACIER": 5,
              "DEEP_ARCHIVE": 6}
UNSUPPORTED_TRANSITIONS = frozenset({("ONEZONE_IA", "GLACIER_IR")})


def may_transition(current: str, target: str) -> bool:
    """Whether a lifecycle transition moves a version of class `current` to `target`."""
    return CLASS_RANK.get(target, 0) > CLASS_RANK.get(current, 0) and \
        (current, target) not in UNSUPPORTED_TRANSITIONS



def is_archived(v: ObjectVersion) -> bool:
    return v.storage_class in ARCHIVE_CLASSES and not v.delete_marker


def latency_s(settings: ArchiveSettings, storage_class: str, tier: str) -> float:
    """Seconds (scaled) from a restore request of `tier` until its copy is made."""
    if storage_class == "DEEP_ARCHIVE":
        real = settings.deep_bulk_s if tier == "Bulk" else settings.deep_standard_s
    else:
        real = {"Expedited": settings.expedited_s, "Standard": settings.standard_s,
                "Bulk": settings.bulk_s}[tier]
    return real * settings.scale


def round_up_to_day(t: float, day_s: float) -> float:
    """The next day boundary at or after `t` (midnight UTC when a day is 86400 s)."""
    return math.ceil(t / day_s) * day_s


def restore_expiry(now: float, days: int, day_s: float) -> float:
    return round_up_to_day(now + days * day_s, day_s)


def restored_now(v: ObjectVersion, now: float | None = None) -> bool:
    r = v.restore
    return r.get("state") == "done" and float(r.get("expiry", 0)) > (now or time.time())


def readable(v: ObjectVersion, now: float | None = None) -> ObjectVersion | None:
    """The version to stream for a GET: `v` itself, its restored copy, or None (archived)."""
    if not is_archived(v):
        return v
    if not restored_now(v, now):
        return None
    r = v.restore
    if not r.get("parts"):
        return v  # nothing was copied
    parts = [PartLayout(**p) for p in r["parts"]]
    if "dek" not in r:  # SSE-C: the copy holds the version's own ciphertext and key
        return dataclasses.replace(v, parts=parts)
    return dataclasses.replace(v, parts=parts, dek=r["dek"],
                               identity_version=r["identity_version"],
                               kek_version=int(r["kek_version"]))

