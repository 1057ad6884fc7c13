"""Two cuts of the 4 KiB request path (issue 17, lane small9), each exactly what it replaces:
the S3 request's state lookups without a KeyError per unset key, and bucket records
decoded once per stored value, every caller getting a copy of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.app import S3Request
from gateway.s3.request_keys import BODY_REPLAY, CORS_HEADERS, FIRST_BYTE
from storage.buckets import BucketService
from storage.crypto.keys import FileRootKey
from storage.keyspace import bucket_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import Bucket
from storage.tenants import TenantService


def _s3_request() -> S3Request:
    base = make_mocked_request("GET", "/b/k")
    return S3Request(base._message, base._payload, base._protocol,  # noqa: SLF001
                     base._payload_writer, base._task, base._loop)  # noqa: SLF001


PRESENT, ABSENT, NEW = (web.RequestKey(n, int) for n in ("present", "absent", "new"))


def test_state_lookups_match_the_mapping_ones() -> None:
    ours, plain = _s3_request(), make_mocked_request("GET", "/b/k")
    for r in (ours, plain):
        r[PRESENT] = 1
    for r in (ours, plain):
        assert r.get(PRESENT) == 1 and r.get(ABSENT) is None and r.get(ABSENT, 5) == 5
        assert r.setdefault(PRESENT, 2) == 1 and r.setdefault(NEW, 3) == 3
        assert r.pop(NEW) == 3 and r.pop(NEW, None) is None
        with pytest.raises(KeyError):
            r.pop(NEW)
    assert dict(ours) == dict(plain) == {PRESENT: 1}


def test_unset_keys_are_not_looked_up_through_getitem(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Mapping mixins raise and catch a KeyError in `__getitem__` per unset key."""
    calls: list[Any] = []
    orig = web.BaseRequest.__getitem__

    def counting(self: web.BaseRequest, key: Any) -> Any:
        calls.append(key)
        return orig(self, key)

    monkeypatch.setattr(web.BaseRequest, "__getitem__", counting)
    r = _s3_request()
    r.get(BODY_REPLAY)
    r.setdefault(FIRST_BYTE, 1.0)
    r.pop(CORS_HEADERS, None)
    assert calls == []


async def _service(tmp_path: Path) -> tuple[SqliteStore, BucketService]:
    store = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(store, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    await tenants.create("t1")  # a bucket is made only for an active tenant
    return store, BucketService(store, "us-east-1")


async def test_a_bucket_record_is_decoded_once_per_stored_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, svc = await _service(tmp_path)
    try:
        await svc.create("t1", "b1", config={"acl": {"owner": "t1", "grants": []}})
        decodes: list[bytes] = []
        orig = Bucket.decode.__func__  # type: ignore[attr-defined]

        def counting(cls: type[Bucket], raw: bytes) -> Bucket:
            decodes.append(raw)
            return orig(cls, raw)

        monkeypatch.setattr(Bucket, "decode", classmethod(counting))
        first, second = await svc.get_any("b1"), await svc.get_any("b1")
        assert len(decodes) == 1
        assert first == second and first is not second and first.config is not second.config
        await svc.update("t1", "b1", versioning="Enabled")
        third = await svc.get_any("b1")
        assert third.versioning == "Enabled" and third.revision > first.revision
    finally:
        await store.close()


async def test_editing_a_returned_bucket_never_reaches_another_caller(tmp_path: Path) -> None:
    store, svc = await _service(tmp_path)
    try:
        await svc.create("t1", "b1", config={"tagging": {"a": "1"}})
        mine = await svc.get_any("b1")
        fresh = Bucket.decode((await store.get(bucket_key("b1"))).value)  # type: ignore[union-attr]
        mine.config["policy"] = "{}"
        mine.config.pop("tagging")
        mine.versioning, mine.region, mine.cached = "Enabled", "elsewhere", True
        again = svc.cached("b1") or await svc.get_any("b1")
        assert again.config == fresh.config and again.versioning == fresh.versioning == ""
        assert again.region == fresh.region and again.revision == mine.revision
        assert not (await svc.get_any("b1")).cached
    finally:
        await store.close()


async def test_a_record_written_elsewhere_is_decoded_again(tmp_path: Path) -> None:
    store, svc = await _service(tmp_path)
    try:
        await svc.create("t1", "b1")
        before = await svc.get_any("b1")
        changed = Bucket.decode(before.encode())
        changed.config["policy"] = "p"
        assert await store.txn(Txn(compares={bucket_key("b1"): before.revision},
                                   puts={bucket_key("b1"): changed.encode()}))
        after = await svc.get_any("b1")
        assert after.config == {"policy": "p"} and after.revision == before.revision + 1
    finally:
        await store.close()
