"""Two SQLite stores on one file (gateway + volume driver): revisions stay coherent."""

from __future__ import annotations

from pathlib import Path

from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore


async def test_two_stores_on_one_file_never_reuse_a_revision(tmp_path: Path) -> None:
    a = await SqliteStore.open(tmp_path / "m.db")
    b = await SqliteStore.open(tmp_path / "m.db")
    try:
        revs = []
        for i in range(20):
            store = a if i % 2 else b
            revs.append(await store.put(b"k%d" % (i % 3), b"v%d" % i))
        assert revs == sorted(revs) and len(set(revs)) == len(revs)
        # A compare-and-swap against a revision read through one store holds in the other.
        item = await a.get(b"k0")
        assert item is not None
        await b.put(b"k0", b"changed")
        assert not await a.txn(Txn(compares={b"k0": item.revision}, puts={b"k0": b"lost"}))
        assert (await a.get(b"k0")).value == b"changed"  # type: ignore[union-attr]
    finally:
        await a.close()
        await b.close()
