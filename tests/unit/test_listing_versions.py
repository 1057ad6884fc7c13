"""ListObjectVersions paging over a key with more versions than one read holds, and over
many common prefixes: every page size, with and without a delimiter, returns exactly the
model's list and always ends.

(A version-id marker deeper than the old fixed read-ahead made the delimited listing loop
forever and the plain one answer IsTruncated with nothing in it.) The records are written to
the metadata store directly: two thousand versions through a cluster take too long."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.keyspace import object_key, version_key
from storage.listing import Listing
from storage.metadata import Item, Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import Bucket, ObjectVersion
from storage.version_ids import new_version_id, version_sort
from tests.unit.test_listing_round_trips import CountingStore

BUCKET = Bucket(name="b", tenant="t", created=0.0, versioning="Enabled")
DEEP = 2050  # more than max-keys 1000 + 1 + the old 1000-record read-ahead
# key -> number of versions in the history; 0: written before versioning (its O/ record only)
KEYS = {"a": 3, "big": DEEP, "c/x": 2, "c/y": 1, "m": 0, "n/p": 0, "n/q": 2, "z": 2}


async def _fill(store: SqliteStore) -> list[tuple[str, str]]:
    """Write the records; return the model: (key, version id) in S3's order."""
    model: list[tuple[str, str]] = []
    for key in sorted(KEYS, key=lambda k: k.encode()):
        n = KEYS[key]
        if n == 0:
            v = ObjectVersion(bucket="b", key=key, version_id="null", tenant="t", size=1,
                              etag="e", last_modified=1.0)
            await store.put(object_key("b", key), v.encode())
            model.append((key, "null"))
            continue
        puts = {}
        for i in range(n):  # i = 0 oldest
            v = ObjectVersion(bucket="b", key=key, version_id=f"{key}-{i:05d}", tenant="t",
                              size=1, etag="e", last_modified=float(i))
            puts[version_key("b", key, version_sort(10**9 + i, v.version_id))] = v.encode()
        assert await store.txn(Txn(puts=puts))
        await store.put(object_key("b", key), v.encode())
        model += [(key, f"{key}-{i:05d}") for i in reversed(range(n))]
    return model


def _delimited(model: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, vid in model:
        pos = key.find("/")
        if pos < 0:
            out.append((key, vid))
        elif ("CP", key[:pos + 1]) not in out:
            out.append(("CP", key[:pos + 1]))
    return out


async def _page_all(listing: Listing, max_keys: int, delimiter: str, km: str = "",
                    vm: str = "") -> list[tuple[str, str]]:
    """Chain pages from the markers as a client does (NextKeyMarker / NextVersionIdMarker,
    as the handler makes them); each page holds at most max_keys entries and a truncated
    one is full."""
    got: list[tuple[str, str]] = []
    for _ in range(3 * DEEP):
        versions, prefixes, more, last = await asyncio.wait_for(
            listing.list_versions(BUCKET, "", km, vm, max_keys, delimiter), 10)
        page = [(v.key, v.version_id) for v in versions] + [("CP", p) for p in prefixes]
        page.sort(key=lambda e: (e[1] if e[0] == "CP" else e[0]).encode())  # stable
        assert len(page) <= max_keys
        got += page
        if not more:
            return got
        assert len(page) == max_keys and last
        km = last
        vm = versions[-1].version_id if versions and versions[-1].key == last else ""
    raise AssertionError("listing never ended")


@pytest.mark.parametrize(("max_keys", "depth"), [(1000, None), (1, 2010)])
async def test_deep_key_pages_match_the_model(tmp_path: Path, max_keys: int,
                                              depth: int | None) -> None:
    """Whole listings at max-keys 1000; one entry a page from a marker deeper
    than the old read-ahead (paging a whole deep key one version a page reads each
    version again per page: minutes)."""
    store = await SqliteStore.open(tmp_path / "meta.db")
    try:
        model = await _fill(store)
        listing = Listing(store)
        km = vm = ""
        if depth is not None:
            km, vm = [e for e in model if e[0] == "big"][depth]
            model = model[model.index((km, vm)) + 1:]
        assert await _page_all(listing, max_keys, "", km, vm) == model
        assert await _page_all(listing, max_keys, "/", km, vm) == _delimited(model)
    finally:
        await store.close()


async def test_deep_version_marker_resumes_right_after_it(tmp_path: Path) -> None:
    """The review's probe: a marker 1,003 versions deep, one entry per page."""
    store = await SqliteStore.open(tmp_path / "meta.db")
    try:
        model = await _fill(store)
        listing = Listing(store)
        deep = [e for e in model if e[0] == "big"][1002]
        after = model[model.index(deep) + 1]
        for delimiter in ("/", ""):  # "/" first: it looped forever
            versions, prefixes, more, last = await asyncio.wait_for(
                listing.list_versions(BUCKET, "", "big", deep[1], 1, delimiter), 10)
            assert ([(v.key, v.version_id) for v in versions], prefixes, more, last) == (
                [after], [], True, "big")
    finally:
        await store.close()


async def test_common_prefixes_come_from_the_batch_already_read(tmp_path: Path) -> None:
    """A page of common prefixes over keys written before versioning (and some with a
    history, one null version in both places) reads the store a few times, not twice per
    prefix plus once per key; paged at any size it is still the model's list."""
    store = await SqliteStore.open(tmp_path / "meta.db")
    try:
        model: list[tuple[str, str]] = []
        puts: dict[bytes, bytes] = {}
        for d in range(120):
            for key in (f"d{d:03d}/o0", f"d{d:03d}/o1", f"d{d:03d}/v"):
                null = ObjectVersion(bucket="b", key=key, version_id="null", tenant="t",
                                     size=1, etag="e", last_modified=1.0)
                puts[object_key("b", key)] = null.encode()
                if key.endswith("/v"):  # two versions written after versioning was enabled
                    for i in range(2):
                        v = ObjectVersion(bucket="b", key=key, version_id=f"v{i}", tenant="t",
                                          size=1, etag="e", last_modified=2.0 + i)
                        puts[version_key("b", key, version_sort(10**9 + i, f"v{i}"))] = (
                            v.encode())
                    puts[version_key("b", key, version_sort(10, "null"))] = null.encode()
                    puts[object_key("b", key)] = v.encode()
                    model += [(key, "v1"), (key, "v0"), (key, "null")]
                else:
                    model.append((key, "null"))
        for key in ("e", "s"):  # top level: e pre-versioning only; s null in O/ and V/
            null = ObjectVersion(bucket="b", key=key, version_id="null", tenant="t", size=1,
                                 etag="e", last_modified=1.0)
            puts[object_key("b", key)] = null.encode()
            if key == "s":
                puts[version_key("b", key, version_sort(10, "null"))] = null.encode()
            model.append((key, "null"))
        assert await store.txn(Txn(puts=puts))
        counting = CountingStore(store)
        listing = Listing(counting)  # type: ignore[arg-type]
        versions, prefixes, more, last = await listing.list_versions(
            BUCKET, "", "", "", 100, "/")
        assert (versions, prefixes[:2], len(prefixes), more, last) == (
            [], ["d000/", "d001/"], 100, True, "d099/")
        assert counting.ranges <= 12, counting.ranges  # it took 3,671 (2 a prefix, 1 a key)
        for max_keys in (1, 7, 100, 1000):
            assert await _page_all(listing, max_keys, "") == model
            assert await _page_all(listing, max_keys, "/") == _delimited(model)
    finally:
        await store.close()


class _ReadCounting(CountingStore):
    """Counts the records range reads return, too."""

    records = 0

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        got = await super().range(start, end, limit, reverse)
        self.records += len(got)
        return got


@pytest.mark.parametrize("delimiter", ["", "/"])
async def test_a_timed_marker_costs_a_few_reads_and_resumes_after_its_deletion(
        tmp_path: Path, delimiter: str) -> None:
    """review13c #3: a version-id marker whose version was deleted between two pages left the
    rest of its key out of the listing, and finding a marker N versions deep read N records.
    Ids say when they were made (storage/version_ids), so the marker's place is found in a
    few reads, and a deleted marker resumes with the versions older than it."""
    store = await SqliteStore.open(tmp_path / "meta.db")
    try:
        t0 = 1_700_000_000 * 10**9
        model: list[tuple[str, str]] = []
        for key, n in (("k", 2500), ("l", 2)):
            puts = {}
            for i in range(n):  # i = 0 oldest; each committed a little after its id was made
                vid = new_version_id(t0 + i * 10**6)
                v = ObjectVersion(bucket="b", key=key, version_id=vid, tenant="t", size=1,
                                  etag="e", last_modified=float(i))
                puts[version_key("b", key, version_sort(t0 + i * 10**6 + 5000, vid))] = (
                    v.encode())
                model.insert(len(model) - i, (key, vid))
            assert await store.txn(Txn(puts=puts))
            await store.put(object_key("b", key), v.encode())
        counting = _ReadCounting(store)
        listing = Listing(counting)  # type: ignore[arg-type]
        deep = model[2000]
        versions, _, more, _ = await listing.list_versions(BUCKET, "", "k", deep[1], 3,
                                                           delimiter)
        assert [(v.key, v.version_id) for v in versions] == model[2001:2004] and more
        assert counting.records < 50, counting.records  # the scan read 2,000
        gone = version_key("b", "k", version_sort(t0 + 499 * 10**6 + 5000, deep[1]))
        assert await store.get(gone) is not None
        assert await store.txn(Txn(deletes=(gone,)))  # deleted between two pages
        versions, _, more, _ = await listing.list_versions(BUCKET, "", "k", deep[1], 3,
                                                           delimiter)
        assert [(v.key, v.version_id) for v in versions] == model[2001:2004] and more
        versions, _, more, _ = await listing.list_versions(BUCKET, "", "k", model[2499][1],
                                                           1000, delimiter)
        assert [(v.key, v.version_id) for v in versions] == model[2500:] and not more
    finally:
        await store.close()


@pytest.mark.parametrize("delimiter", ["", "/"])
async def test_versions_committed_before_or_long_after_their_id_time_page_once(
        tmp_path: Path, delimiter: str) -> None:
    """review14b #2: a version listed below its id's time (the clock stepped back between
    making the id and committing) or more than MARKER_SEARCH_NS after it was not found from
    its marker: the page resumed at the id's time, listing the marker and newer ones again
    (forever) or skipping those committed between. The by-id scan finds it."""
    store = await SqliteStore.open(tmp_path / "meta.db")
    try:
        t0, s = 1_700_000_000 * 10**9, 10**9
        made_commit = [(0, 5000), (100 * s, 40 * s), (200 * s, 200 * s + 3 * 86400 * s),
                       (300 * s, 300 * s + 5000), (400 * s, 400 * s - 1)]
        puts, listed = {}, []
        for i, (made, commit) in enumerate(made_commit):
            vid = new_version_id(t0 + made)
            v = ObjectVersion(bucket="b", key="k", version_id=vid, tenant="t", size=1,
                              etag="e", last_modified=float(i))
            puts[version_key("b", "k", version_sort(t0 + commit, vid))] = v.encode()
            listed.append((t0 + commit, vid))
        assert await store.txn(Txn(puts=puts))
        await store.put(object_key("b", "k"), v.encode())
        z = ObjectVersion(bucket="b", key="z", version_id="null", tenant="t", size=1,
                          etag="e", last_modified=1.0)
        await store.put(object_key("b", "z"), z.encode())
        model = [("k", vid) for _, vid in sorted(listed, reverse=True)] + [("z", "null")]
        listing = Listing(store)
        for max_keys in (1, 2, 1000):
            assert await _page_all(listing, max_keys, delimiter) == model
    finally:
        await store.close()
