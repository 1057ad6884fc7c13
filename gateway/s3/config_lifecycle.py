"""Bucket lifecycle configuration: the LifecycleConfiguration document validated like AWS
(same error codes and messages where AWS documents or is known to send them) into plain rule
dicts, which the bucket record stores and the lifecycle worker reads without knowing XML, and
the stored rules back as the XML AWS would return (Put and Get round-trip)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from gateway.s3.config_xml import RULE_ID_CHARS_MAX
from gateway.s3.errors import S3Error, xml_document
from gateway.s3.xml import _add, _root
from gateway.s3.xml_parse import (
    find_all,
    find_text,
    invalid_argument,
    local_name,
    malformed,
    only_children,
    parse_document,
    parse_int,
)
from storage.archive_classes import CLASS_RANK

__all__ = ["lifecycle_xml", "parse_lifecycle"]

LIFECYCLE_RULES_MAX = 1000
OBJECT_SIZE_MAX = 5 * 1024**4  # a lifecycle size filter's bound (AWS: "Maximum filter size is 5 TB")
AND_PREDICATES = ("Prefix", "ObjectSizeGreaterThan", "ObjectSizeLessThan", "Tag")
TRANSITION_CLASSES = ("GLACIER", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                      "DEEP_ARCHIVE", "GLACIER_IR")
# AWS: objects stay at least 30 days in S3 before a transition to an IA class (Days >= 30)
IA_CLASSES = ("STANDARD_IA", "ONEZONE_IA")
IA_MIN_DAYS = 30
NEWER_NONCURRENT_MAX = 100  # AWS: "You can specify up to 100 noncurrent versions to retain"


def _date(text: str, action: str) -> str:
    """An ISO 8601 date at midnight UTC, normalised to `YYYY-MM-DDT00:00:00.000Z`."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid_argument(f"'Date' for {action} action is not a valid ISO 8601 date",
                               "Date", text) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    if (when.hour, when.minute, when.second, when.microsecond) != (0, 0, 0, 0):
        raise invalid_argument("'Date' must be at midnight GMT", "Date", text)
    return when.strftime("%Y-%m-%dT00:00:00.000Z")


def _days(elem: ET.Element, name: str, action: str, minimum: int) -> int | None:
    value = parse_int(find_text(elem, name), name, bits=32)  # the schema's Days is an int
    if value is not None and value < minimum:
        word = "positive" if minimum > 0 else "nonnegative"
        raise invalid_argument(f"'{name}' for {action} action must be a {word} integer", name,
                               str(value))
    return value


def _required_days(elem: ET.Element, name: str, action: str, minimum: int) -> int:
    """A Days-like element the action cannot do without: absent, it is refused as AWS does
    (InvalidArgument saying the value must be a positive / nonnegative integer), never stored
    as an action that would never fall due."""
    value = _days(elem, name, action, minimum)
    if value is None:
        word = "positive" if minimum > 0 else "nonnegative"
        raise invalid_argument(f"'{name}' for {action} action must be a {word} integer", name)
    return value


def _newer_noncurrent(elem: ET.Element, action: str) -> int | None:
    """NewerNoncurrentVersions: 1 to 100 versions kept (AWS's documented bound)."""
    value = _days(elem, "NewerNoncurrentVersions", action, 1)
    if value is not None and value > NEWER_NONCURRENT_MAX:
        raise invalid_argument(f"'NewerNoncurrentVersions' for {action} action must be "
                               f"between 1 and {NEWER_NONCURRENT_MAX}",
                               "NewerNoncurrentVersions", str(value))
    return value


def _tag(elem: ET.Element) -> tuple[str, str]:
    only_children(elem, ("Key", "Value"))
    key, value = find_text(elem, "Key"), find_text(elem, "Value")
    if key is None or value is None:
        raise malformed("Tag needs Key and Value")
    return key, value


def _size(elem: ET.Element, name: str) -> int | None:
    value = parse_int(find_text(elem, name), name)
    if value is not None and not 0 <= value <= OBJECT_SIZE_MAX:
        raise invalid_argument(f"{name} must be between 0 and {OBJECT_SIZE_MAX}", name, str(value))
    return value


def _filter(rule: ET.Element) -> tuple[dict[str, Any], bool]:
    """The rule's filter as {prefix, tags, size_gt, size_lt}; True if the legacy Prefix.

    As AWS's schema: a Filter holds at most one of Prefix, Tag, ObjectSizeGreaterThan,
    ObjectSizeLessThan or And, and an And combines two or more of the first four (several
    Tags allowed); anything else is MalformedXML. An empty Filter selects every object."""
    legacy = find_text(rule, "Prefix")
    filters = find_all(rule, "Filter")
    if legacy is not None and filters:
        raise malformed("a Rule has both Prefix and Filter")
    if legacy is not None:
        return {"prefix": legacy, "tags": {}, "size_gt": None, "size_lt": None}, True
    if len(filters) != 1:
        raise malformed("a Rule needs one Filter (or Prefix)")
    f = filters[0]
    out: dict[str, Any] = {"prefix": None, "tags": {}, "size_gt": None, "size_lt": None}
    children = [c for c in f if isinstance(c.tag, str)]
    if len(children) > 1:
        raise malformed("a Filter holds one condition; combine them with And")
    if children and local_name(children[0].tag) not in (*AND_PREDICATES, "And"):
        raise malformed(f"unknown Filter condition {local_name(children[0].tag)!r}")
    target = f
    ands = find_all(f, "And")
    if ands:
        target = ands[0]
        preds = [c for c in target if isinstance(c.tag, str)]
        if len(preds) < 2:
            raise malformed("And combines two or more conditions")
        names = [local_name(c.tag) for c in preds]
        if any(n not in AND_PREDICATES for n in names) or \
                any(names.count(n) > 1 for n in AND_PREDICATES[:3]):
            raise malformed("And holds Prefix, Tags and size conditions, each once")
    out["prefix"] = find_text(target, "Prefix")
    for t in find_all(target, "Tag"):
        k, v = _tag(t)
        if k in out["tags"]:
            raise S3Error("InvalidRequest", "Duplicate Tag Keys are not allowed.")
        out["tags"][k] = v
    out["size_gt"] = _size(target, "ObjectSizeGreaterThan")
    out["size_lt"] = _size(target, "ObjectSizeLessThan")
    if out["size_gt"] is not None and out["size_lt"] is not None \
            and out["size_gt"] >= out["size_lt"]:
        raise invalid_argument("ObjectSizeGreaterThan must be less than ObjectSizeLessThan",
                               "ObjectSizeGreaterThan", str(out["size_gt"]))
    return out, False


def _transition(elem: ET.Element, noncurrent: bool) -> dict[str, Any]:
    action = "NoncurrentVersionTransition" if noncurrent else "Transition"
    only_children(elem, ("NoncurrentDays", "NewerNoncurrentVersions", "StorageClass")
                  if noncurrent else ("Date", "Days", "StorageClass"))
    sc = find_text(elem, "StorageClass")
    if sc not in TRANSITION_CLASSES:
        raise malformed(f"{action} StorageClass {sc!r}")
    name = "NoncurrentDays" if noncurrent else "Days"
    days = _required_days(elem, name, action, 0) if noncurrent else _days(elem, name, action, 0)
    if sc in IA_CLASSES and days is not None and days < IA_MIN_DAYS:
        raise invalid_argument(f"'{name}' in {action} action must be greater than or equal to "
                               f"{IA_MIN_DAYS} for storageClass '{sc}'", name, str(days))
    if noncurrent:
        return {"noncurrent_days": days,
                "newer_noncurrent_versions": _newer_noncurrent(elem, action),
                "storage_class": sc}
    date = find_text(elem, "Date")
    if (days is None) == (date is None):
        raise malformed(f"{action} needs exactly one of Days and Date")
    return {"days": days, "date": _date(date, action) if date else None, "storage_class": sc}


def _transitions(rule: ET.Element, noncurrent: bool) -> list[dict[str, Any]]:
    action = "NoncurrentVersionTransition" if noncurrent else "Transition"
    return [_transition(t, noncurrent) for t in find_all(rule, action)]


def _filter_label(r: dict[str, Any]) -> str:
    """A rule's filter as AWS names it in lifecycle errors: `(prefix=logs/ and tag={key=k,
    value=v} and objectsizegreaterthan=10)`; `(prefix=)` for an empty filter."""
    f = r["filter"]
    parts = [] if f["prefix"] is None else [f"prefix={f['prefix']}"]
    parts += [f"tag={{key={k}, value={v}}}" for k, v in f["tags"].items()]
    parts += [f"{name}={f[key]}" for key, name in (("size_gt", "objectsizegreaterthan"),
                                                    ("size_lt", "objectsizelessthan"))
              if f[key] is not None]
    return f"({' and '.join(parts)})" if parts else "(prefix=)"


# Days a class keeps an object before a later transition of the same rule, where AWS says so:
# 30 in STANDARD_IA / ONEZONE_IA (AWS knowledge center: "Objects that are in the S3
# Standard-IA storage class must be in this class for 30 days before they transition to S3
# Glacier"), 90 in GLACIER_IR (AWS's answer to IA 30 / GLACIER_IR 60 / DEEP_ARCHIVE 90: "Days
# in the Transition action for StorageClass DEEP_ARCHIVE must be 90 days more than Transition
# for StorageClass GLACIER_IR"). No source found for INTELLIGENT_TIERING or GLACIER (-> DEEP_ARCHIVE).
MIN_DAYS_BEFORE_NEXT = {"STANDARD_IA": 30, "ONEZONE_IA": 30, "GLACIER_IR": 90}


def _check_order(items: list[dict[str, Any]], action: str, field: str, key: str,
                 label: str) -> None:
    """Down AWS's waterfall (storage.archive_classes.CLASS_RANK) each class of one rule's transitions
    comes strictly later than the warmer ones (a colder class first would leave the warmer
    transition never applied), and a Days transition at least the warmer class's minimum
    stay later (`MIN_DAYS_BEFORE_NEXT`). Two NoncurrentVersionTransitions on the same day
    keeping different numbers of newer versions are both applicable: accepted."""
    ranked = sorted(items, key=lambda t: CLASS_RANK[t["storage_class"]])
    for warm, cold in zip(ranked, ranked[1:], strict=False):
        if key == "noncurrent_days" and cold[key] == warm[key] and \
                cold.get("newer_noncurrent_versions") != warm.get("newer_noncurrent_versions"):
            continue
        if cold[key] <= warm[key]:
            raise invalid_argument(
                f"'{field}' in the {action} action for StorageClass '{cold['storage_class']}' "
                f"for filter '{label}' must be greater than '{field}' in the {action} action "
                f"for StorageClass '{warm['storage_class']}' for filter '{label}'", field,
                str(cold[key]))
        gap = MIN_DAYS_BEFORE_NEXT.get(warm["storage_class"], 0)
        if key == "days" and cold[key] - warm[key] < gap:
            raise invalid_argument(
                f"Days in the Transition action for StorageClass {cold['storage_class']} must "
                f"be {gap} days more than Transition for StorageClass {warm['storage_class']}",
                field, str(cold[key]))


def _check_actions(r: dict[str, Any]) -> None:
    """AWS's checks across one rule's actions: transitions all by Days or all by Date, each
    class once per transition kind and colder classes later, and an expiration of the same
    kind (Days or Date) later than every transition it would otherwise pre-empt."""
    label = _filter_label(r)
    by_date = {t["date"] is not None for t in r["transitions"]}
    if len(by_date) > 1:
        raise S3Error("InvalidRequest", "Found mixed 'Date' and 'Days' based Transition actions "
                      f"in lifecycle rule for filter '{label}'")
    for action, key in (("Transition", "transitions"),
                        ("NoncurrentVersionTransition", "noncurrent_transitions")):
        classes = [t["storage_class"] for t in r[key]]
        if len(set(classes)) != len(classes):
            raise S3Error("InvalidRequest", f"'StorageClass' must be different for '{action}' "
                          f"actions in same 'Rule' with filter '{label}'")
    field = "Date" if True in by_date else "Days"
    _check_order(r["transitions"], "Transition", field, field.lower(), label)
    _check_order(r["noncurrent_transitions"], "NoncurrentVersionTransition", "NoncurrentDays",
                 "noncurrent_days", label)
    exp = r["expiration"] or {}
    exp_field = "Days" if exp.get("days") is not None else \
        "Date" if exp.get("date") is not None else None
    if exp_field and r["transitions"]:
        if exp_field != field:
            raise S3Error("InvalidRequest", "Found mixed 'Date' and 'Days' based Expiration and "
                          f"Transition actions in lifecycle rule for filter '{label}'")
        when = exp[exp_field.lower()]
        if any(t[exp_field.lower()] >= when for t in r["transitions"]):
            raise invalid_argument(f"'{exp_field}' in the Expiration action for filter "
                                   f"'{label}' must be greater than '{exp_field}' in the "
                                   "Transition action", exp_field, str(when))
    nc_days = (r["noncurrent_expiration"] or {}).get("noncurrent_days")
    if nc_days is not None and any(t["noncurrent_days"] >= nc_days
                                   for t in r["noncurrent_transitions"]):
        raise invalid_argument("'NoncurrentDays' in the NoncurrentVersionExpiration action for "
                               f"filter '{label}' must be greater than 'NoncurrentDays' in the "
                               "NoncurrentVersionTransition action", "NoncurrentDays",
                               str(nc_days))


def _rule(rule: ET.Element) -> dict[str, Any]:
    only_children(rule, ("ID", "Prefix", "Filter", "Status", "Expiration",
                         "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"),
                  ("Transition", "NoncurrentVersionTransition"))
    rule_id = find_text(rule, "ID")
    if rule_id is None or rule_id == "":
        rule_id = secrets.token_hex(24)
    if len(rule_id) > RULE_ID_CHARS_MAX:
        raise invalid_argument("ID length should not exceed allowed limit of 255", "ID", rule_id)
    status = find_text(rule, "Status")
    if status not in ("Enabled", "Disabled"):
        raise malformed(f"Status {status!r}")
    flt, legacy = _filter(rule)
    out: dict[str, Any] = {"id": rule_id, "status": status, "filter": flt,
                           "legacy_prefix": legacy, "expiration": None, "transitions": [],
                           "noncurrent_expiration": None, "noncurrent_transitions": [],
                           "abort_incomplete_mpu_days": None}
    exp = find_all(rule, "Expiration")
    if exp:
        e = exp[0]
        only_children(e, ("Date", "Days", "ExpiredObjectDeleteMarker"))
        days, date = _days(e, "Days", "Expiration", 1), find_text(e, "Date")
        marker = find_text(e, "ExpiredObjectDeleteMarker")
        given = [x for x in (days, date, marker) if x is not None]
        if len(given) != 1:
            raise malformed("Expiration needs exactly one of Days, Date, "
                             "ExpiredObjectDeleteMarker")
        if marker is not None and marker.strip() not in ("true", "false"):
            raise malformed(f"ExpiredObjectDeleteMarker {marker!r}")
        if marker is not None and (flt["tags"]):
            raise malformed("ExpiredObjectDeleteMarker cannot be used with tag filters")
        out["expiration"] = {"days": days, "date": _date(date, "Expiration") if date else None,
                             "expired_object_delete_marker":
                                 None if marker is None else marker.strip() == "true"}
    out["transitions"] = _transitions(rule, False)
    nce = find_all(rule, "NoncurrentVersionExpiration")
    if nce:
        only_children(nce[0], ("NoncurrentDays", "NewerNoncurrentVersions"))
        out["noncurrent_expiration"] = {
            "noncurrent_days": _required_days(nce[0], "NoncurrentDays",
                                              "NoncurrentVersionExpiration", 1),
            "newer_noncurrent_versions": _newer_noncurrent(nce[0],
                                                           "NoncurrentVersionExpiration")}
    out["noncurrent_transitions"] = _transitions(rule, True)
    abort = find_all(rule, "AbortIncompleteMultipartUpload")
    if abort:
        only_children(abort[0], ("DaysAfterInitiation",))
        days = _days(abort[0], "DaysAfterInitiation", "AbortIncompleteMultipartUpload", 1)
        if days is None:
            raise malformed("AbortIncompleteMultipartUpload needs DaysAfterInitiation")
        if flt["tags"]:
            # AWS: 400 InvalidRequest (an upload has no tags until it completes)
            raise S3Error("InvalidRequest",
                          "AbortIncompleteMultipartUpload cannot be specified with Tags.")
        out["abort_incomplete_mpu_days"] = days
    if not (out["expiration"] or out["transitions"] or out["noncurrent_expiration"]
            or out["noncurrent_transitions"] or out["abort_incomplete_mpu_days"]):
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    _check_actions(out)
    return out


def parse_lifecycle(body: bytes) -> list[dict[str, Any]]:
    """LifecycleConfiguration -> list of rule dicts (see `_rule`); 1 to 1000 unique IDs."""
    root = parse_document(body, "LifecycleConfiguration")
    only_children(root, (), ("Rule",))
    elems = find_all(root, "Rule")
    if not elems or len(elems) > LIFECYCLE_RULES_MAX:
        raise malformed(f"{len(elems)} lifecycle rules; 1 to {LIFECYCLE_RULES_MAX} allowed")
    rules = [_rule(e) for e in elems]
    ids = [r["id"] for r in rules]
    if len(set(ids)) != len(ids):
        raise invalid_argument("Rule ID must be unique. Found same ID for more than one rule", "ID",
                               next(i for i in ids if ids.count(i) > 1))
    return rules


def _add_transition(parent: ET.Element, tag: str, t: dict[str, Any]) -> None:
    elem = _add(parent, tag, None)
    for key, name in (("date", "Date"), ("days", "Days"), ("noncurrent_days", "NoncurrentDays"),
                      ("newer_noncurrent_versions", "NewerNoncurrentVersions")):
        if t.get(key) is not None:
            _add(elem, name, t[key])
    _add(elem, "StorageClass", t["storage_class"])


def _add_filter(rule_elem: ET.Element, r: dict[str, Any]) -> None:
    f = r["filter"]
    if r.get("legacy_prefix"):
        _add(rule_elem, "Prefix", f["prefix"] or "")
        return
    elem = _add(rule_elem, "Filter", None)
    conditions = (int(f["prefix"] is not None) + len(f["tags"]) + int(f["size_gt"] is not None)
                  + int(f["size_lt"] is not None))
    target = _add(elem, "And", None) if conditions > 1 else elem
    if f["prefix"] is not None:
        _add(target, "Prefix", f["prefix"])
    for k, v in f["tags"].items():
        tag = _add(target, "Tag", None)
        _add(tag, "Key", k)
        _add(tag, "Value", v)
    if f["size_gt"] is not None:
        _add(target, "ObjectSizeGreaterThan", f["size_gt"])
    if f["size_lt"] is not None:
        _add(target, "ObjectSizeLessThan", f["size_lt"])


def lifecycle_xml(rules: list[dict[str, Any]]) -> bytes:
    """GetBucketLifecycleConfiguration: the stored rules as LifecycleConfiguration."""
    root = _root("LifecycleConfiguration")
    for r in rules:
        elem = _add(root, "Rule", None)
        if r.get("expiration"):
            e = _add(elem, "Expiration", None)
            x = r["expiration"]
            if x.get("date") is not None:
                _add(e, "Date", x["date"])
            if x.get("days") is not None:
                _add(e, "Days", x["days"])
            if x.get("expired_object_delete_marker") is not None:
                _add(e, "ExpiredObjectDeleteMarker", x["expired_object_delete_marker"])
        _add(elem, "ID", r["id"])
        _add_filter(elem, r)
        _add(elem, "Status", r["status"])
        for t in r["transitions"]:
            _add_transition(elem, "Transition", t)
        for t in r["noncurrent_transitions"]:
            _add_transition(elem, "NoncurrentVersionTransition", t)
        if r.get("noncurrent_expiration"):
            n = _add(elem, "NoncurrentVersionExpiration", None)
            _add(n, "NoncurrentDays", r["noncurrent_expiration"]["noncurrent_days"])
            if r["noncurrent_expiration"].get("newer_noncurrent_versions") is not None:
                _add(n, "NewerNoncurrentVersions",
                     r["noncurrent_expiration"]["newer_noncurrent_versions"])
        if r.get("abort_incomplete_mpu_days") is not None:
            a = _add(elem, "AbortIncompleteMultipartUpload", None)
            _add(a, "DaysAfterInitiation", r["abort_incomplete_mpu_days"])
    return xml_document(root)
