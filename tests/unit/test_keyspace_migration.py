"""The layout-1 -> layout-2 key migration on a real SQLite store: every record lands at its
new key with its value, idempotent, and resumable after a crash at any point."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import keyspace as ks
from storage.keyspace_migration import upgrade
from storage.metadata import MetadataStore, Txn, open_store
from storage.records import ObjectVersion, pack, unpack
from tests.vectors.layout1 import old_key, to_layout1


def _version(key: str, vid: str, restore: dict | None = None) -> bytes:
    return ObjectVersion(bucket="bkt", key=key, version_id=vid, tenant="t", size=1, etag="e",
                         last_modified=1.0, restore=restore or {}).encode()


def layout2_records() -> dict[bytes, bytes]:
    """One record of every kind, with the names that collided in layout 1."""
    sid, sid2 = bytes(range(16)), bytes(range(16, 32))
    qk = ks.archive_job_key(ks.RESTORE_QUEUE, 5, "bkt", "v.txt\x00zzz", "vid2")
    ek = ks.archive_job_key(ks.RESTORE_EXPIRY, 9, "bkt", "v.txt", "vid1")
    vx = ks.extent_key("vol1", 3, 7)
    return {
        ks.bucket_key("bkt"): b"bucket",
        ks.tenant_bucket_key("t", "bkt"): b"",
        ks.object_key("bkt", "v.txt"): _version("v.txt", "vid1", {"expiry_key": ek}),
        ks.object_key("bkt", "v.txt\x00zzz"): _version("v.txt\x00zzz", "vid2",
                                                       {"queue_key": qk}),
        ks.version_key("bkt", "v.txt", "0002.vid1"): _version("v.txt", "vid1"),
        ks.version_key("bkt", "v.txt\x00zzz", "0001.vid2"): _version("v.txt\x00zzz", "vid2"),
        ks.upload_key("bkt", "k\x00", "up1"): pack({"bucket": "bkt", "key": "k\x00",
                                                    "upload_id": "up1"}),
        ks.part_key("up1", 2): b"part",
        ks.tenant_key("t"): b"tenant",
        ks.access_key_key("AKIA"): b"key",
        ks.repair_key(sid): b"r",
        ks.urgent_repair_key(sid2): b"u",
        ks.gc_key(123, sid): b"g",
        ks.stripe_index_key(sid): pack({"state": "live", "kind": "extent", "vx": vx}),
        ks.member_key("n1"): b"m",
        ks.rewrap_key("t"): b"rw",
        ks.shred_key("t"): b"ts",
        ks.volume_key("t", "vol"): b"vol",
        vx: b"extent",
        ks.volume_lease_key("vol1"): b"vl",
        qk: b"ar",
        ek: b"ae",
        ks.system_key("access-secret-kek"): b"s",
    }


async def _dump(meta: MetadataStore) -> dict[bytes, bytes]:
    return {i.key: i.value for i in await meta.range(b"", b"\xff" * 8, limit=100000)}


async def _store(tmp_path: Path, rows: list[tuple[bytes, bytes]]) -> MetadataStore:
    meta = await open_store("sqlite", str(tmp_path / "meta" / "t.db"))
    await meta.txn(Txn(puts=dict(rows)))
    return meta


def test_layout1_spelling_is_df444a3s() -> None:
    """The fixture writes exactly what the old builders wrote (pinned by hand)."""
    assert old_key(ks.object_key("bkt", "v.txt\x00zzz")) == b"O/bkt\x00v.txt\x00zzz"
    assert old_key(ks.version_key("bkt", "v.txt", "0002.vid1")) == b"V/bkt\x00v.txt\x000002.vid1"
    assert old_key(ks.gc_key(123, b"\x01")) == b"G/00000000000000000123/01"
    assert old_key(ks.urgent_repair_key(b"\x01")) == b"R/!01"
    assert old_key(ks.extent_key("v", 3, 7)) == b"VX/v/0000000003/0000000007"


async def test_upgrade_moves_every_record(tmp_path: Path) -> None:
    want = layout2_records()
    meta = await _store(tmp_path, to_layout1(list(want.items()))
                        + [(b"L/repair", b"lease")])
    try:
        assert await upgrade(meta) == len(want) + 1
        got = await _dump(meta)
        layout = got.pop(ks.layout_key())
        assert unpack(layout)["version"] == ks.LAYOUT_VERSION
        assert got == want  # leases dropped, values that held keys rewritten
        assert await upgrade(meta) == 0  # idempotent: the layout record short-cuts
        assert await _dump(meta) == {**want, ks.layout_key(): layout}
    finally:
        await meta.close()


class Crash(Exception):
    pass


class CrashingStore:
    """A store that dies after `left` successful transactions (a gateway killed mid-upgrade)."""

    def __init__(self, meta: MetadataStore, left: int) -> None:
        self._meta, self.left = meta, left

    def __getattr__(self, name: str):
        return getattr(self._meta, name)

    async def txn(self, txn: Txn) -> bool:
        if self.left == 0:
            raise Crash
        self.left -= 1
        return await self._meta.txn(txn)

    async def put(self, key: bytes, value: bytes) -> int:
        if self.left == 0:
            raise Crash
        return await self._meta.put(key, value)


@pytest.mark.parametrize("crash_after", [0, 1, 7, 15, 19])
async def test_upgrade_resumes_after_a_crash(tmp_path: Path, crash_after: int) -> None:
    want = layout2_records()
    meta = await _store(tmp_path, to_layout1(list(want.items())))
    try:
        with pytest.raises(Crash):
            await upgrade(CrashingStore(meta, crash_after))  # type: ignore[arg-type]
        assert await meta.get(ks.layout_key()) is None  # written last: not there yet
        old_left = [k for k, _ in to_layout1(list(want.items())) if await meta.get(k)]
        assert await upgrade(meta) == len(old_left)
        got = await _dump(meta)
        got.pop(ks.layout_key())
        assert got == want
    finally:
        await meta.close()


async def test_a_new_store_is_stamped(tmp_path: Path) -> None:
    meta = await _store(tmp_path, [])
    try:
        assert await upgrade(meta) == 0
        assert await _dump(meta) == {ks.layout_key(): (await meta.get(ks.layout_key())).value}
    finally:
        await meta.close()


async def test_two_upgraders_at_once(tmp_path: Path) -> None:
    """Two gateways opening the same old store together: each record moves exactly once."""
    import asyncio

    want = layout2_records()
    meta = await _store(tmp_path, to_layout1(list(want.items())))
    other = await open_store("sqlite", str(tmp_path / "meta" / "t.db"))
    try:
        moved = await asyncio.gather(upgrade(meta), upgrade(other))
        assert sum(moved) == len(want)
        got = await _dump(meta)
        got.pop(ks.layout_key())
        assert got == want
    finally:
        await other.close()
        await meta.close()
