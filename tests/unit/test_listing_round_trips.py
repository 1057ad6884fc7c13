"""A full ListObjectsV2 page is one range read of the metadata store, not two: on etcd each
read is a network round trip (issue 17's multi-host path)."""

from __future__ import annotations

from pathlib import Path

from storage.keyspace import object_key
from storage.listing import Listing
from storage.metadata import Item
from storage.metadata.sqlite import SqliteStore
from storage.records import Bucket, ObjectVersion


class CountingStore:
    """The real SQLite store, counting range reads."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.ranges = 0

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        self.ranges += 1
        return await self.inner.range(start, end, limit, reverse)

    async def get(self, key: bytes) -> Item | None:
        """Not a range (a deleted marker's recorded place: storage/listing.py)."""
        return await self.inner.get(key)


async def test_full_page_is_one_range_read(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "meta.db")
    try:
        for i in range(1005):
            v = ObjectVersion(bucket="b", key=f"k{i:05d}", version_id="null", tenant="t",
                              size=1, etag="e", last_modified=0.0)
            await store.put(object_key("b", v.key), v.encode())
        counting = CountingStore(store)
        listing = Listing(counting)  # type: ignore[arg-type]
        bucket = Bucket(name="b", tenant="t", created=0.0)
        objs, prefixes, more, last = await listing.list(bucket, max_keys=1000)
        assert (len(objs), prefixes, more, last) == (1000, [], True, "k00999")
        assert counting.ranges == 1
        counting.ranges = 0
        objs, _, more, _ = await listing.list(bucket, start_after="k00999", max_keys=1000)
        assert (len(objs), more, counting.ranges) == (5, False, 1)
    finally:
        await store.close()
