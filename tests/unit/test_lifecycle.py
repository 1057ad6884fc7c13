"""Lifecycle rule evaluation and archive clock arithmetic (pure functions)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from storage.archive_classes import latency_s, readable, restore_expiry, round_up_to_day
from storage.compression import Counter, compress_stream, decompress_stream
from storage.config import ArchiveSettings
from storage.lifecycle_rules import (
    Action,
    abort_due,
    current_action,
    due_at,
    matches,
    noncurrent_action,
)
from storage.records import ObjectVersion, PartLayout

DAY = 10.0


def rule(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r", "status": "Enabled",
        "filter": {"prefix": None, "tags": {}, "size_gt": None, "size_lt": None},
        "legacy_prefix": False, "expiration": None, "transitions": [],
        "noncurrent_expiration": None, "noncurrent_transitions": [],
        "abort_incomplete_mpu_days": None}
    flt = kw.pop("filter", {})
    base["filter"].update(flt)
    base.update(kw)
    return base


def version(key: str = "logs/a", size: int = 200_000, lm: float = 1000.0, **kw: Any,
            ) -> ObjectVersion:
    return ObjectVersion(bucket="b", key=key, version_id="v", tenant="t", size=size, etag="e",
                         last_modified=lm, **kw)


def test_filter_prefix_tags_and_size() -> None:
    r = rule(filter={"prefix": "logs/", "tags": {"k": "v"}, "size_gt": 10, "size_lt": 100})
    assert matches(r, "logs/x", 50, {"k": "v", "o": "1"})
    assert not matches(r, "other/x", 50, {"k": "v"})
    assert not matches(r, "logs/x", 50, {"k": "w"})
    assert not matches(r, "logs/x", 10, {"k": "v"})
    assert not matches(r, "logs/x", 100, {"k": "v"})
    assert not matches({**r, "status": "Disabled"}, "logs/x", 50, {"k": "v"})


def test_days_round_up_to_next_day_and_dates() -> None:
    assert due_at(1, None, 1003.0, DAY) == 1020.0
    assert due_at(0, None, 1003.0, DAY) == 1010.0
    assert due_at(None, "2012-12-21T00:00:00.000Z", 0, DAY) == 1356048000.0
    assert due_at(None, None, 0, DAY) is None
    assert round_up_to_day(1356048000.0 - 1, 86400) == 1356048000.0
    assert restore_expiry(1356000000.0, 1, 86400) == 1356134400.0  # next midnight after +1d


def test_expiration_beats_transition_and_coldest_wins() -> None:
    r = rule(expiration={"days": 2, "date": None, "expired_object_delete_marker": None},
             transitions=[{"days": 0, "date": None, "storage_class": "STANDARD_IA"},
                          {"days": 1, "date": None, "storage_class": "GLACIER"}])
    v = version(lm=1003.0)
    assert current_action([r], v, 1005.0, DAY) is None
    assert current_action([r], v, 1010.0, DAY) == Action("transition", "STANDARD_IA")
    assert current_action([r], v, 1020.0, DAY) == Action("transition", "GLACIER")
    assert current_action([r], v, 1030.0, DAY) == Action("expire")


def test_waterfall_and_small_objects() -> None:
    r = rule(transitions=[{"days": 0, "date": None, "storage_class": "GLACIER"}])
    assert current_action([r], version(storage_class="DEEP_ARCHIVE"), 1e6, DAY) is None
    assert current_action([r], version(storage_class="GLACIER"), 1e6, DAY) is None
    ir = rule(transitions=[{"days": 0, "date": None, "storage_class": "GLACIER_IR"}])
    assert current_action([ir], version(size=1000), 1e6, DAY) is None
    assert current_action([r], version(size=1000), 1e6, DAY) == Action("transition", "GLACIER")



def test_waterfall_through_the_warm_classes() -> None:
    """AWS's waterfall: STANDARD_IA -> INTELLIGENT_TIERING -> ONEZONE_IA -> GLACIER_IR, and
    ONEZONE_IA -> GLACIER_IR is the one colder move AWS does not make. A rule moving objects
    to STANDARD_IA at 30 days and ONEZONE_IA at 60 moves them on at 60 (they stayed in
    STANDARD_IA when the IA classes shared a rank)."""
    def t(days: int, sc: str) -> dict[str, Any]:
        return {"days": days, "date": None, "storage_class": sc}

    r = rule(transitions=[t(30, "STANDARD_IA"), t(60, "ONEZONE_IA")])
    assert current_action([r], version(lm=1000.0), 1000.0 + 31 * DAY, DAY) == \
        Action("transition", "STANDARD_IA")
    ia = version(lm=1000.0, storage_class="STANDARD_IA")
    assert current_action([r], ia, 1000.0 + 31 * DAY, DAY) is None
    assert current_action([r], ia, 1000.0 + 61 * DAY, DAY) == Action("transition", "ONEZONE_IA")
    assert current_action([r], version(lm=1000.0), 1000.0 + 61 * DAY, DAY) == \
        Action("transition", "ONEZONE_IA")  # both due: the colder one
    order = ["STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER_IR", "GLACIER",
             "DEEP_ARCHIVE"]
    for i, src in enumerate(["STANDARD", *order]):
        for dst in order:
            want = order.index(dst) >= i and (src, dst) != ("ONEZONE_IA", "GLACIER_IR")
            got = current_action([rule(transitions=[t(30, dst)])],
                                 version(lm=1000.0, storage_class=src), 1e6, DAY)
            assert (got == Action("transition", dst)) == want, (src, dst)


def test_delete_marker_and_noncurrent() -> None:
    eodm = rule(expiration={"days": None, "date": None, "expired_object_delete_marker": True})
    marker = version(delete_marker=True, size=0)
    assert current_action([eodm], marker, 1e6, DAY, only_version=True) == \
        Action("remove_marker")
    assert current_action([eodm], marker, 1e6, DAY, only_version=False) is None
    nc = rule(noncurrent_expiration={"noncurrent_days": 1, "newer_noncurrent_versions": 2},
              noncurrent_transitions=[{"noncurrent_days": 0, "newer_noncurrent_versions": None,
                                       "storage_class": "GLACIER"}])
    v = version()
    assert noncurrent_action([nc], v, 1003.0, 5, 1005.0, DAY) is None
    assert noncurrent_action([nc], v, 1003.0, 5, 1010.0, DAY) == Action("transition", "GLACIER")
    assert noncurrent_action([nc], v, 1003.0, 1, 1020.0, DAY) == Action("transition", "GLACIER")
    assert noncurrent_action([nc], v, 1003.0, 2, 1020.0, DAY) == Action("expire")


def test_abort_incomplete_uploads() -> None:
    r = rule(filter={"prefix": "mpu/"}, abort_incomplete_mpu_days=1)
    assert not abort_due([r], "mpu/x", 1003.0, 1019.0, DAY)
    assert abort_due([r], "mpu/x", 1003.0, 1020.0, DAY)
    assert not abort_due([r], "other", 1003.0, 1e6, DAY)


def test_restore_latency_scales_with_day() -> None:
    s = ArchiveSettings(day_seconds=8640.0)  # a tenth of a real day
    assert latency_s(s, "GLACIER", "Expedited") == 30.0
    assert latency_s(s, "GLACIER", "Bulk") == 4320.0
    assert latency_s(s, "DEEP_ARCHIVE", "Standard") == 4320.0


def test_readable_archive_states() -> None:
    hot = version()
    assert readable(hot) is hot
    cold = version(storage_class="GLACIER")
    assert readable(cold) is None
    cold.restore = {"state": "ongoing"}
    assert readable(cold) is None
    part = PartLayout(number=1, size=5, etag="e", stripe_id=b"s" * 16, k=4, m=2,
                      segment_size=1 << 20, nodes=[])
    cold.restore = {"state": "done", "expiry": 2e9, "parts": [part.__dict__], "dek": b"d",
                    "identity_version": "iv", "kek_version": 3}
    got = readable(cold, now=1e9)
    assert got is not None and got.parts == [part] and got.identity_version == "iv"
    assert readable(cold, now=3e9) is None


def test_compression_round_trip_bounded() -> None:
    async def main() -> None:
        data = os.urandom(100_000) + b"\0" * 5_000_000 + b"abc" * 100_000

        async def src() -> Any:
            for i in range(0, len(data), 77_777):
                yield data[i:i + 77_777]

        counter = Counter()
        frames = [f async for f in compress_stream(src(), [], counter)]
        blob = b"".join(frames)
        assert counter.plain == len(data) and len(blob) < len(data) // 10

        async def stored() -> Any:
            for i in range(0, len(blob), 4096):
                yield blob[i:i + 4096]

        out = [p async for p in decompress_stream(stored())]
        assert b"".join(out) == data
        assert max(len(p) for p in out) <= 1 << 20

    asyncio.run(main())


def test_days_rule_removes_an_old_sole_delete_marker() -> None:
    days = rule(expiration={"days": 2, "date": None, "expired_object_delete_marker": None})
    marker = version(delete_marker=True, size=0, lm=1003.0)
    assert current_action([days], marker, 1029.0, DAY, only_version=True) is None
    assert current_action([days], marker, 1030.0, DAY, only_version=True) == \
        Action("remove_marker")
    assert current_action([days], marker, 1e6, DAY, only_version=False) is None
    tagged = rule(filter={"tags": {"k": "v"}},
                  expiration={"days": 2, "date": None, "expired_object_delete_marker": None})
    assert current_action([tagged], marker, 1e6, DAY, only_version=True) is None


def test_transition_default_minimum_object_size() -> None:
    glacier = rule(transitions=[{"days": 0, "date": None, "storage_class": "GLACIER"}])
    small, big = version(size=1000), version(size=200_000)
    # varies_by_storage_class (the default): small objects still go to GLACIER classes
    assert current_action([glacier], small, 1e6, DAY) == Action("transition", "GLACIER")
    every = "all_storage_classes_128K"
    assert current_action([glacier], small, 1e6, DAY, mode=every) is None
    assert current_action([glacier], big, 1e6, DAY, mode=every) == Action("transition", "GLACIER")
    # a rule's own size filter takes precedence over either default
    sized = rule(filter={"size_gt": 10},
                 transitions=[{"days": 0, "date": None, "storage_class": "STANDARD_IA"}])
    assert current_action([sized], small, 1e6, DAY, mode=every) == \
        Action("transition", "STANDARD_IA")
    nc = rule(noncurrent_transitions=[{"noncurrent_days": 0, "newer_noncurrent_versions": None,
                                       "storage_class": "GLACIER"}])
    assert noncurrent_action([nc], small, 1003.0, 0, 1e6, DAY, mode=every) is None
    assert noncurrent_action([nc], small, 1003.0, 0, 1e6, DAY) == Action("transition", "GLACIER")
