"""Bucket lifecycle rules, evaluated: which rule selects which object, and what is due when.

Pure functions over the plain rule dicts `gateway.s3.config_lifecycle.parse_lifecycle` stores in
`bucket.config["lifecycle"]` (filter = {prefix, tags, size_gt, size_lt}); the engine
(`storage.lifecycle`) applies them, the S3 gateway reports them (`x-amz-expiration`,
`x-amz-abort-date`). As in S3: an action with Days is due at creation (for noncurrent actions:
at the time the version became noncurrent) plus Days, rounded up to the next day boundary
(midnight UTC with real days; the day length is `storage.lifecycle_clock`'s); an action with
Date is due at that date. Expiration wins over transition; among transitions the coldest due
class wins, and a version only ever moves to a colder class (AWS's waterfall:
STANDARD_IA, INTELLIGENT_TIERING, ONEZONE_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE in that order,
but never ONEZONE_IA to GLACIER_IR).

Small objects (AWS's TransitionDefaultMinimumObjectSize): with `varies_by_storage_class` (the
default here) objects under 128 KiB are not moved to STANDARD_IA, ONEZONE_IA,
INTELLIGENT_TIERING or GLACIER_IR; with `all_storage_classes_128K` not to any class. A rule
with its own ObjectSizeGreaterThan / ObjectSizeLessThan is exempt from either default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.archive_classes import CLASS_RANK, may_transition, round_up_to_day
from storage.records import ObjectVersion

SMALL_OBJECT_BYTES = 128 * 1024
SMALL_EXEMPT_CLASSES = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")
ALL_CLASSES_128K = "all_storage_classes_128K"
VARIES_BY_CLASS = "varies_by_storage_class"
MIN_SIZE_MODES = (ALL_CLASSES_128K, VARIES_BY_CLASS)
DEFAULT_MIN_SIZE_MODE = VARIES_BY_CLASS


def filter_matches(f: dict[str, Any], key: str, size: int, tags: dict[str, str]) -> bool:
    """Whether a filter selects an object: every condition given holds (AND); an empty
    filter selects everything. Tags match by key and exact value; extra object tags are fine;
    size bounds are strict (ObjectSizeGreaterThan < size < ObjectSizeLessThan)."""
    if not key.startswith(f.get("prefix") or ""):
        return False
    if any(k not in tags or tags[k] != v for k, v in (f.get("tags") or {}).items()):
        return False
    gt, lt = f.get("size_gt"), f.get("size_lt")
    return (gt is None or size > gt) and (lt is None or size < lt)


def matches(rule: dict[str, Any], key: str, size: int, tags: dict[str, str],
            ignore_size_and_tags: bool = False) -> bool:
    """Whether an Enabled rule's filter (prefix, tags, size bounds) selects this object."""
    if rule.get("status") != "Enabled":
        return False
    f = rule.get("filter") or {}
    if ignore_size_and_tags:
        return key.startswith(f.get("prefix") or "")
    return filter_matches(f, key, size, tags)


def due_at(days: int | None, date: str | None, since: float, day_s: float) -> float | None:
    """When an action with Days (counted from `since`) or Date becomes due; None if neither."""
    if date:
        return datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
    if days is None:
        return None
    return round_up_to_day(since + days * day_s, day_s)


def _may_move(rule: dict[str, Any], size: int, target: str, current: str, mode: str) -> bool:
    if not may_transition(current, target):
        return False
    f = rule.get("filter") or {}
    if size >= SMALL_OBJECT_BYTES or f.get("size_gt") is not None or \
            f.get("size_lt") is not None:
        return True  # a rule's own size filter takes precedence over the default minimum
    return mode != ALL_CLASSES_128K and target not in SMALL_EXEMPT_CLASSES


@dataclass(frozen=True)
class Action:
    kind: str  # "expire" | "transition" | "remove_marker"
    storage_class: str | None = None


def _marker_action(rules: list[dict[str, Any]], v: ObjectVersion, now: float, day_s: float,
                   only_version: bool) -> Action | None:
    """An expired object delete marker (the key's only version) is removed by a rule with
    ExpiredObjectDeleteMarker, or, once it is Days old, by a rule whose Expiration has Days
    (AWS: "S3 automatically performs ExpiredObjectDeleteMarker cleanup when the delete
    markers are old enough"). A marker has no tags, so a tag filter never selects it."""
    if not only_version:
        return None
    for r in rules:
        if not matches(r, v.key, 0, {}, ignore_size_and_tags=True) or \
                (r.get("filter") or {}).get("tags"):
            continue
        e = r.get("expiration") or {}
        if e.get("expired_object_delete_marker"):
            return Action("remove_marker")
        t = due_at(e.get("days"), None, v.last_modified, day_s)
        if t is not None and t <= now:
            return Action("remove_marker")
    return None


def current_action(rules: list[dict[str, Any]], v: ObjectVersion, now: float, day_s: float,
                   only_version: bool = False,
                   mode: str = DEFAULT_MIN_SIZE_MODE) -> Action | None:
    """The action due now for a current version (`only_version`: no other versions exist;
    `mode`: the configuration's TransitionDefaultMinimumObjectSize)."""
    if v.delete_marker:
        return _marker_action(rules, v, now, day_s, only_version)
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
            if t is not None and t <= now and _may_move(r, v.size, sc, v.storage_class, mode) \
                    and (best is None or CLASS_RANK[sc] > CLASS_RANK[best]):
                best = sc
    return Action("transition", best) if best else None


def noncurrent_action(rules: list[dict[str, Any]], v: ObjectVersion, since: float,
                      newer_noncurrent: int, now: float, day_s: float,
                      mode: str = DEFAULT_MIN_SIZE_MODE) -> Action | None:
    """The action due for a noncurrent version: noncurrent since `since`, with
    `newer_noncurrent` noncurrent versions of the same key newer than it. With
    NewerNoncurrentVersions N, the N newest noncurrent versions are kept whatever their age.

    A noncurrent delete marker is an object with no data to the size bounds (AWS User Guide,
    "Examples of S3 Lifecycle configurations", "Expiring noncurrent objects that have no
    data": ObjectSizeLessThan 1 selects "noncurrent delete marker objects"), so a rule with
    ObjectSizeGreaterThan never expires one. A marker has no tags, so a tag filter never
    selects it (AWS API model, LifecycleRuleFilter Tag: "This tag must exist in the object's
    tag set in order for the rule to apply"), as for a current marker (`_marker_action`): one reading for both."""
    best: str | None = None
    for r in rules:
        if not matches(r, v.key, 0 if v.delete_marker else v.size,
                       {} if v.delete_marker else v.tags):
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
                    _may_move(r, v.size, sc, v.storage_class, mode) and \
                    (best is None or CLASS_RANK[sc] > CLASS_RANK[best]):
                best = sc
    return Action("transition", best) if best else None


def abort_rule(rules: list[dict[str, Any]], key: str, initiated: float,
               day_s: float) -> tuple[float, str] | None:
    """(when, rule id) an upload of `key` begun at `initiated` becomes eligible for abort by
    an AbortIncompleteMultipartUpload rule (the earliest), or None: what CreateMultipartUpload
    and ListParts report as x-amz-abort-date / x-amz-abort-rule-id."""
    best: tuple[float, str] | None = None
    for r in rules:
        days = r.get("abort_incomplete_mpu_days")
        if days is None or not matches(r, key, 0, {}, ignore_size_and_tags=True):
            continue
        t = due_at(days, None, initiated, day_s)
        if t is not None and (best is None or t < best[0]):
            best = (t, r["id"])
    return best


def abort_due(rules: list[dict[str, Any]], key: str, initiated: float, now: float,
              day_s: float) -> bool:
    found = abort_rule(rules, key, initiated, day_s)
    return found is not None and found[0] <= now


def expiration_rule(rules: list[dict[str, Any]], v: ObjectVersion,
                    day_s: float) -> tuple[float, str] | None:
    """(when, rule id) of the earliest current-version Expiration (Days or Date) of an
    Enabled rule selecting this version, or None: what PUT/HEAD/GET report as
    x-amz-expiration. A delete marker has none."""
    if v.delete_marker:
        return None
    best: tuple[float, str] | None = None
    for r in rules:
        e = r.get("expiration") or {}
        if (e.get("days") is None and not e.get("date")) or \
                not matches(r, v.key, v.size, v.tags):
            continue
        t = due_at(e.get("days"), e.get("date"), v.last_modified, day_s)
        if t is not None and (best is None or t < best[0]):
            best = (t, r["id"])
    return best
