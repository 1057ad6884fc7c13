"""The SQLite store's group commit: many callers' writes in one transaction, each op's
outcome its own (`storage/metadata/sqlite.py`), and the store's inline-body flag read without
an exception on every commit and GET (`storage/inline_bodies.py`).

Real `SqliteStore`s on a temporary file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from storage import inline_bodies
from storage.keyspace import object_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.telemetry import TimedStore


async def test_a_batch_commits_with_no_savepoint_per_operation(tmp_path: Path) -> None:
    """Sixteen writers in one transaction: their compares and writes, the revision, and no
    SAVEPOINT/RELEASE pair around each (two statements per op, each a GIL hand-off)."""
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        seen: list[str] = []
        store._w.set_trace_callback(seen.append)  # noqa: SLF001 - the writer connection
        keys = [object_key("b", f"k{i}") for i in range(16)]
        done = await asyncio.gather(*(store.txn_or_read(
            Txn(compares={k: 0}, puts={k: b"v" * 4700}), (k,)) for k in keys))
        store._w.set_trace_callback(None)  # noqa: SLF001
        assert all(ok for ok, _ in done)
        assert sum(s.startswith("BEGIN") for s in seen) == 1  # one group commit
        assert not any("SAVEPOINT" in s or s.startswith("RELEASE") for s in seen), seen
        items = [await store.get(k) for k in keys]
        assert len({i.revision for i in items if i}) == 16  # one revision per op
        assert all(i is not None and i.value == b"v" * 4700 for i in items)
    finally:
        await store.close()


async def test_an_operation_that_raises_is_left_out_and_the_others_commit(
        tmp_path: Path) -> None:
    """An op that wrote and then raised (not an SQLite error) gets its exception, nothing it
    wrote commits, and the ops batched with it (before and after) commit, with revisions in
    order, as each op's own savepoint gave before (this holds on the old code too)."""
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        first, bad, last = (object_key("b", n) for n in ("first", "bad", "last"))

        def broken(c: sqlite3.Connection, next_rev: Callable[[], int]) -> None:
            c.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (bad, b"x", next_rev()))
            raise ValueError("a bug in an op")

        results = await asyncio.gather(
            store.put(first, b"1"), store._write(broken, (bad,)),  # noqa: SLF001
            store.put(last, b"3"), return_exceptions=True)
        assert isinstance(results[1], ValueError)
        assert await store.get(bad) is None
        one, three = await store.get(first), await store.get(last)
        assert one is not None and three is not None and one.value == b"1"
        assert (one.revision, three.revision) == (results[0], results[2])
        assert three.revision > one.revision
        assert await store.put(bad, b"2") > three.revision  # the counter stayed true
    finally:
        await store.close()


async def test_the_inline_body_flag_is_read_without_an_attribute_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit and GET asks the store whether bodies are kept apart: the timed store
    answers from its own attribute (a `__getattr__` raising AttributeError through two
    objects cost more than the rest of the check), with the inner store's answer."""
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        forwarded: list[str] = []
        real = TimedStore.__getattr__

        def counting(self: TimedStore, name: str) -> object:
            forwarded.append(name)
            return real(self, name)

        monkeypatch.setattr(TimedStore, "__getattr__", counting)
        timed = TimedStore(store)
        forwarded.clear()
        assert inline_bodies.enabled(timed) is False
        assert forwarded == []

        class Apart:
            inline_apart = True

        assert inline_bodies.enabled(TimedStore(Apart())) is True  # type: ignore[arg-type]
    finally:
        await store.close()
