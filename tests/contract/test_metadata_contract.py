"""The MetadataStore contract every backend must meet (SQLite always; etcd when configured).

To run against etcd: `storage/metadata/etcd.py` must exist, `open_store("etcd", ...)` must
open it, and TESSERA_ETCD_ENDPOINTS names the endpoints (comma separated). Each test works
under its own random key prefix, so a shared etcd needs no cleanup between tests.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.metadata import MetadataStore, Txn, open_store, prefix_end
from tests.contract.conftest import session_tls

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite"]
if (ROOT / "storage" / "metadata" / "etcd.py").exists() and os.environ.get(
        "TESSERA_ETCD_ENDPOINTS"):
    BACKENDS.append("etcd")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    endpoints = tuple(e for e in os.environ.get("TESSERA_ETCD_ENDPOINTS", "").split(",") if e)
    s = await open_store(request.param, str(tmp_path / "meta" / "t.db"), endpoints,
                         session_tls())
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def ns() -> bytes:
    """A private key prefix for one test (binary, to prove keys are bytes all the way)."""
    return b"ct/" + secrets.token_bytes(6) + b"/"


async def test_get_put_delete(store: MetadataStore, ns: bytes) -> None:
    k = ns + b"a"
    assert await store.get(k) is None
    rev = await store.put(k, b"one")
    assert rev > 0
    item = await store.get(k)
    assert item is not None and item.key == k and item.value == b"one" and item.revision == rev
    rev2 = await store.put(k, b"two")
    assert rev2 > rev
    item = await store.get(k)
    assert item is not None and (item.value, item.revision) == (b"two", rev2)
    assert await store.delete(k) is True
    assert await store.get(k) is None
    assert await store.delete(k) is False


async def test_binary_keys_and_values(store: MetadataStore, ns: bytes) -> None:
    keys = [ns + b"\x00", ns + b"\x00\x00", ns + b"\x01\xff", ns + b"\x7f", ns + b"\x80",
            ns + b"\xff", ns + b"\xff\xff\x00", ns + "é/ü".encode()]
    values = {k: bytes([i]) * i + b"\x00\xff" for i, k in enumerate(keys)}
    for k in reversed(keys):
        await store.put(k, values[k])
    for k in keys:
        item = await store.get(k)
        assert item is not None and item.value == values[k]
    got = await store.range(ns, prefix_end(ns))
    assert [i.key for i in got] == sorted(keys)  # ordered bytewise, unsigned
    assert [i.value for i in got] == [values[k] for k in sorted(keys)]
    await store.put(ns + b"empty", b"")
    item = await store.get(ns + b"empty")
    assert item is not None and item.value == b""


async def test_range_bounds_limit_and_reverse(store: MetadataStore, ns: bytes) -> None:
    keys = [ns + f"k{i:03d}".encode() for i in range(30)]
    for k in keys:
        await store.put(k, k[-4:])
    await store.put(ns[:-1] + b".", b"outside-before")  # sorts before the prefix
    await store.put(prefix_end(ns), b"outside-after")
    end = prefix_end(ns)
    assert [i.key for i in await store.range(ns, end)] == keys
    assert [i.key for i in await store.range(ns, end, limit=5)] == keys[:5]
    assert [i.key for i in await store.range(ns, end, limit=5, reverse=True)] == \
        list(reversed(keys))[:5]
    assert [i.key for i in await store.range(ns, end, reverse=True)] == list(reversed(keys))
    # start is inclusive, end exclusive
    assert [i.key for i in await store.range(keys[3], keys[7])] == keys[3:7]
    assert [i.key for i in await store.range(keys[3], keys[7], reverse=True)] == \
        list(reversed(keys[3:7]))
    assert await store.range(keys[5], keys[5]) == []
    assert await store.range(ns + b"zzz", end) == []
    # paging: continue after the last key seen
    seen: list[bytes] = []
    start = ns
    while True:
        page = await store.range(start, end, limit=7)
        if not page:
            break
        seen += [i.key for i in page]
        start = page[-1].key + b"\x00"
    assert seen == keys
    items = await store.range(ns, end, limit=1)
    one = await store.get(keys[0])
    assert one is not None and items[0].revision == one.revision


async def test_revisions_increase_across_keys(store: MetadataStore, ns: bytes) -> None:
    revs = [await store.put(ns + bytes([i]), b"v") for i in range(10)]
    assert revs == sorted(revs) and len(set(revs)) == 10
    later = await store.put(ns + b"\x00", b"again")
    assert later > revs[-1]
    await store.delete(ns + b"\x01")
    after_delete = await store.put(ns + b"\x02", b"x")
    assert after_delete > later


async def test_txn_create_if_absent(store: MetadataStore, ns: bytes) -> None:
    k = ns + b"lock"
    assert await store.txn(Txn(compares={k: 0}, puts={k: b"mine"})) is True
    first = await store.get(k)
    assert first is not None and first.value == b"mine"
    assert await store.txn(Txn(compares={k: 0}, puts={k: b"theirs"})) is False
    item = await store.get(k)
    assert item is not None and (item.value, item.revision) == (b"mine", first.revision)


async def test_txn_compare_and_swap_on_revision(store: MetadataStore, ns: bytes) -> None:
    k, other = ns + b"obj", ns + b"idx"
    rev = await store.put(k, b"v1")
    assert await store.txn(Txn(compares={k: rev + 1000}, puts={k: b"bad"})) is False
    assert await store.txn(Txn(compares={k: 0}, puts={k: b"bad"})) is False
    item = await store.get(k)
    assert item is not None and item.value == b"v1"
    assert await store.txn(Txn(compares={k: rev}, puts={k: b"v2", other: b"i"})) is True
    a, b = await store.get(k), await store.get(other)
    assert a is not None and b is not None
    assert a.value == b"v2" and a.revision > rev
    assert a.revision == b.revision  # one transaction, one revision
    assert await store.txn(Txn(compares={k: rev}, puts={k: b"v3"})) is False  # stale
    item = await store.get(k)
    assert item is not None and item.value == b"v2"


async def test_txn_failure_applies_nothing(store: MetadataStore, ns: bytes) -> None:
    a, b, c = ns + b"a", ns + b"b", ns + b"c"
    ra = await store.put(a, b"1")
    await store.put(b, b"2")
    ok = await store.txn(Txn(compares={a: ra, c: 12345}, puts={a: b"x", c: b"y"},
                             deletes=(b,)))
    assert ok is False
    assert [(i.key, i.value) for i in await store.range(ns, prefix_end(ns))] == \
        [(a, b"1"), (b, b"2")]


async def test_txn_puts_and_deletes_atomically(store: MetadataStore, ns: bytes) -> None:
    a, b, c = ns + b"a", ns + b"b", ns + b"c"
    ra = await store.put(a, b"1")
    rb = await store.put(b, b"2")
    assert await store.txn(Txn(compares={a: ra, b: rb, c: 0}, puts={c: b"3"},
                               deletes=(a, b))) is True
    assert [(i.key, i.value) for i in await store.range(ns, prefix_end(ns))] == [(c, b"3")]
    assert await store.txn(Txn(deletes=(c, ns + b"never"))) is True
    assert await store.range(ns, prefix_end(ns)) == []


async def test_txn_compare_only(store: MetadataStore, ns: bytes) -> None:
    k = ns + b"k"
    rev = await store.put(k, b"v")
    assert await store.txn(Txn(compares={k: rev})) is True
    assert await store.txn(Txn(compares={k: rev + 1})) is False
    item = await store.get(k)
    assert item is not None and item.revision == rev  # compare-only writes nothing


async def test_concurrent_cas_has_one_winner(store: MetadataStore, ns: bytes) -> None:
    k = ns + b"race"
    rev = await store.put(k, b"0")
    results = await asyncio.gather(*(store.txn(Txn(compares={k: rev}, puts={k: bytes([i])}))
                                     for i in range(1, 9)))
    assert results.count(True) == 1
    winner = results.index(True) + 1
    item = await store.get(k)
    assert item is not None and item.value == bytes([winner])


async def test_txn_or_read_returns_current_records_on_failure(store: MetadataStore,
                                                              ns: bytes) -> None:
    """A failed compare-and-swap hands back the records a retry needs, read atomically with
    the failed compare (so a commit retries without another round trip)."""
    a, b, absent = ns + b"a", ns + b"b", ns + b"absent"
    ra = await store.put(a, b"1")
    rb = await store.put(b, b"2")
    done, seen = await store.txn_or_read(Txn(compares={a: ra, b: rb + 1}, puts={a: b"x"}),
                                         (a, absent, b))
    assert done is False
    assert list(seen) == [a, absent, b]
    assert seen[absent] is None
    assert (seen[a].value, seen[a].revision) == (b"1", ra)  # type: ignore[union-attr]
    assert (seen[b].value, seen[b].revision) == (b"2", rb)  # type: ignore[union-attr]
    done, seen = await store.txn_or_read(Txn(compares={a: ra, b: rb, absent: 0},
                                             puts={a: b"x"}, deletes=(b,)), (a, b))
    assert (done, seen) == (True, {})
    assert [(i.key, i.value) for i in await store.range(ns, prefix_end(ns))] == [(a, b"x")]


def test_prefix_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") > b"\xff\xff\xff"
