"""SQLite keeps bucket records in memory between reads, and a bucket written by any process
that opens the same file is re-read by every other at once (`storage/metadata/sharedgen.py`).

Real `SqliteStore`s on one file; the other writer is a real separate process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage.keyspace import bucket_key, object_key, tenant_key
from storage.metadata import Txn
from storage.metadata import sqlite as sqlite_mod
from storage.metadata.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]


def _count_queries(store: SqliteStore) -> list[str]:
    seen: list[str] = []
    assert store._point is not None  # noqa: SLF001 - the connection point reads use
    store._point.set_trace_callback(seen.append)  # noqa: SLF001
    return seen


async def test_a_bucket_record_is_read_from_the_file_once(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        await store.put(bucket_key("b1"), b"one")
        await store.put(tenant_key("t1"), b"tenant")
        queries = _count_queries(store)
        for _ in range(3):
            assert (await store.get(bucket_key("b1"))).value == b"one"  # type: ignore[union-attr]
            assert await store.get(bucket_key("nope")) is None
        assert len(queries) == 2  # one per bucket key, absent included
        for _ in range(2):
            assert (await store.get(tenant_key("t1"))).value == b"tenant"  # type: ignore[union-attr]
        assert len(queries) == 4  # other records are read from the file every time
    finally:
        await store.close()


async def test_a_write_through_another_store_is_seen_at_once(tmp_path: Path) -> None:
    a = await SqliteStore.open(tmp_path / "m.db")
    b = await SqliteStore.open(tmp_path / "m.db")
    try:
        key = bucket_key("b1")
        rev = await a.put(key, b"v1")
        assert (await a.get(key)).value == b"v1"  # type: ignore[union-attr]
        assert (await b.get(key)).value == b"v1"  # type: ignore[union-attr]
        assert await b.txn(Txn(compares={key: rev}, puts={key: b"v2"}))
        got = await a.get(key)
        assert got is not None and got.value == b"v2" and got.revision == rev + 1
        await b.delete(key)
        assert await a.get(key) is None
        await b.put(key, b"v3")
        assert (await a.get(key)).value == b"v3"  # type: ignore[union-attr]
    finally:
        await a.close()
        await b.close()


async def test_a_write_by_another_process_is_seen_at_once(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = await SqliteStore.open(db)
    try:
        key = bucket_key("b1")
        await store.put(key, b"before")
        assert (await store.get(key)).value == b"before"  # type: ignore[union-attr]
        script = textwrap.dedent(f"""
            import asyncio
            from storage.keyspace import bucket_key
            from storage.metadata.sqlite import SqliteStore
            async def main():
                s = await SqliteStore.open({str(db)!r})
                await s.put(bucket_key("b1"), b"after")
                await s.close()
            asyncio.run(main())
        """)
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
        assert (await store.get(key)).value == b"after"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_cached_record_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound on a record left stale by a writer killed between commit and bump."""
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        await store.put(bucket_key("b1"), b"one")
        queries = _count_queries(store)
        monkeypatch.setattr(sqlite_mod, "CACHE_TTL_S", 0.0)
        await store.get(bucket_key("b1"))
        await store.get(bucket_key("b1"))
        assert len(queries) == 2
    finally:
        await store.close()


async def test_a_re_read_of_an_unchanged_record_hands_out_the_same_item(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Expired, or re-read after a write of another record of its kind: an unchanged record
    comes back as the very `Item` handed out before (what callers keep per `Item`, like
    `ObjectReads`' decoded versions, stays); a changed one as a new `Item`."""
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        key = object_key("b1", "k")
        await store.put(key, b"obj")
        queries = _count_queries(store)
        monkeypatch.setattr(sqlite_mod, "CACHE_TTL_S", 0.0)
        first = await store.get(key)
        assert await store.get(key) is first  # expired, re-read, unchanged
        monkeypatch.setattr(sqlite_mod, "CACHE_TTL_S", 60.0)
        await store.put(object_key("b1", "other"), b"o")
        assert await store.get(key) is first  # another object written: re-read, unchanged
        assert len(queries) == 3  # each get went to the file
        rev = await store.put(key, b"new")
        got = await store.get(key)
        assert got is not first and got is not None
        assert (got.value, got.revision) == (b"new", rev)
        await store.put(key, b"obj")  # the first value again, at a later revision
        again = await store.get(key)
        assert again is not first and again is not got and again is not None
        assert again.value == b"obj" and again.revision > rev
        await store.delete(key)
        assert await store.get(key) is None
    finally:
        await store.close()


async def test_an_object_record_is_read_from_the_file_once(tmp_path: Path) -> None:
    """Current object records (every GET and HEAD reads one) are kept like bucket records,
    under their own counter: a bucket write leaves them cached, an object write does not;
    a record too large to keep is read every time."""
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        key, big = object_key("b1", "k"), object_key("b1", "big")
        await store.put(key, b"obj")
        await store.put(big, b"x" * (sqlite_mod.OBJECT_CACHE_BYTES + 1))
        queries = _count_queries(store)
        for _ in range(3):
            assert (await store.get(key)).value == b"obj"  # type: ignore[union-attr]
            assert await store.get(object_key("b1", "absent")) is None
        assert len(queries) == 2
        await store.put(bucket_key("b1"), b"bucket")  # another kind: objects stay cached
        assert (await store.get(key)).value == b"obj"  # type: ignore[union-attr]
        assert len(queries) == 2
        await store.put(object_key("b1", "other"), b"o")  # any object write: re-read
        assert (await store.get(key)).value == b"obj"  # type: ignore[union-attr]
        assert len(queries) == 3
        for _ in range(2):
            assert len((await store.get(big)).value) > sqlite_mod.OBJECT_CACHE_BYTES  # type: ignore[union-attr]
        assert len(queries) == 5
    finally:
        await store.close()


async def test_an_object_written_by_another_process_is_seen_at_once(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = await SqliteStore.open(db)
    try:
        key = object_key("b1", "k")
        rev = await store.put(key, b"before")
        assert (await store.get(key)).value == b"before"  # type: ignore[union-attr]
        script = textwrap.dedent(f"""
            import asyncio
            from storage.keyspace import object_key
            from storage.metadata import Txn
            from storage.metadata.sqlite import SqliteStore
            async def main():
                s = await SqliteStore.open({str(db)!r})
                k = object_key("b1", "k")
                assert await s.txn(Txn(compares={{k: {rev}}}, puts={{k: b"after"}}))
                await s.delete(object_key("b1", "gone"))
                await s.close()
            asyncio.run(main())
        """)
        await store.put(object_key("b1", "gone"), b"here")
        assert (await store.get(object_key("b1", "gone"))) is not None
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
        got = await store.get(key)
        assert got is not None and got.value == b"after" and got.revision > rev
        assert await store.get(object_key("b1", "gone")) is None
    finally:
        await store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
async def test_counters_take_the_databases_owner_and_mode(tmp_path: Path) -> None:
    """A root-run process (the CLI, cron) that first opens a service user's database makes
    counters that user can still open for writing: same owner, same mode."""
    db = tmp_path / "meta.db"
    store = await SqliteStore.open(db)
    await store.close()
    for suffix in (".bucketgen", ".objectgen", ".authgen"):
        Path(f"{db}{suffix}").unlink()
    os.chown(db, 65534, 65534)
    db.chmod(0o660)
    store = await SqliteStore.open(db)
    await store.close()
    for suffix in (".bucketgen", ".objectgen", ".authgen"):
        st = os.stat(f"{db}{suffix}")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o660)
