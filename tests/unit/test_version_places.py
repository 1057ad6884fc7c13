"""Pruning deleted versions' places (storage/version_places.py `prune`): only records older
than the cut go, and a record put again between the pass's read and its delete (version
"null" deleted again) stays."""

from __future__ import annotations

from pathlib import Path

from storage.keyspace import span, version_left_key, version_left_prefix
from storage.metadata import Item
from storage.metadata.sqlite import SqliteStore
from storage.version_places import left_place, left_record, prune


class RacingStore:
    """The real SQLite store; after the first range read, `again` is put once more (another
    delete of that version id committing while the pass holds its page)."""

    def __init__(self, inner: SqliteStore, again: tuple[bytes, bytes]) -> None:
        self.inner = inner
        self.again: tuple[bytes, bytes] | None = again

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        items = await self.inner.range(start, end, limit, reverse)
        if self.again is not None:
            await self.inner.put(*self.again)
            self.again = None
        return items


async def test_prune_drops_old_places_and_keeps_one_put_again(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        old_a, old_null = version_left_key("b", "a", "x"), version_left_key("b", "n", "null")
        fresh = version_left_key("b", "f", "y")
        await store.put(old_a, left_record(b"ha", 100))
        await store.put(old_null, left_record(b"hn", 100))
        await store.put(fresh, left_record(b"hf", 10_000))
        await store.put(version_left_key("other", "a", "x"), left_record(b"ho", 100))
        racing = RacingStore(store, (old_null, left_record(b"hn2", 20_000)))
        assert await prune(racing, "b", before_ns=5_000) == 1  # type: ignore[arg-type]
        left = {i.key: left_place(i.value) for i in
                await store.range(*span(version_left_prefix("b")))}
        assert left == {old_null: b"hn2", fresh: b"hf"}
        assert len(await store.range(*span(version_left_prefix("other")))) == 1
    finally:
        await store.close()
