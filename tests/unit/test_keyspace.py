"""Properties of the metadata key encoding (`storage.keyspace`): injective, order-preserving,
prefix-free, decodable, and S3-prefix scans that hold exactly the names they should."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import keyspace as ks

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Names biased towards the hard cases: NUL, \x01, \xff-range and astral code points, and
# names built from a tiny alphabet so that prefixes of each other are common.
hard_chars = st.sampled_from(["\x00", "\x01", "a", "b", "/", "\xff", "\u00ff", "\U0010ffff",
                              "\ufffd", "\x7f"])
names = st.one_of(st.text(hard_chars, max_size=8),
                  st.text(st.characters(exclude_categories=("Cs",)), max_size=12))
tuples = st.lists(names, min_size=1, max_size=4).map(tuple)


def utf8(t: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(s.encode("utf-8") for s in t)


@given(tuples)
def test_decode_inverts_encode(t: tuple[str, ...]) -> None:
    assert ks.unpack(ks.pack(*t)) == t


@given(tuples, tuples)
def test_injective_and_order_preserving(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    """Packed keys compare exactly as the tuples of UTF-8 names (S3's listing order)."""
    pa, pb = ks.pack(*a), ks.pack(*b)
    assert (pa == pb) == (a == b)
    assert (pa < pb) == (utf8(a) < utf8(b))


@given(tuples, tuples)
def test_prefix_free_and_span(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    """A key lies in the span of a packed tuple exactly when that tuple is its prefix: no
    name reaches into another name's range (`k\\0x` is not under `k`)."""
    start, end = ks.span(ks.pack(*a))
    inside = start <= ks.pack(*b) < end
    assert inside == (b[: len(a)] == a)


@given(names, names, names)
def test_text_span_is_s3_prefix(bucket: str, prefix: str, key: str) -> None:
    """The keys under a bucket whose name starts with `prefix` are exactly the scan range."""
    base = ks.pack("O", bucket)
    start, end = ks.text_span(base, prefix)
    assert (start <= ks.pack("O", bucket, key) < end) == key.startswith(prefix)
    vstart, vend = ks.text_span(ks.pack("V", bucket), prefix)
    assert (vstart <= ks.pack("V", bucket, key, "0001.v") < vend) == key.startswith(prefix)


@given(names, names)
def test_last_text(bucket: str, key: str) -> None:
    assert ks.last_text(ks.object_prefix(bucket), ks.object_key(bucket, key)) == key


@given(names, names, names)
def test_next_key_and_past_text(bucket: str, a: str, b: str) -> None:
    base = ks.pack("O", bucket)
    ka, kb = ks.pack("O", bucket, a), ks.pack("O", bucket, b)
    assert (ks.next_key(ka) <= kb) == (a.encode() < b.encode())
    if a:
        assert (ks.past_text(base, a) <= kb) == (not b.startswith(a) and b.encode() > a.encode())


def test_malformed_keys_are_refused() -> None:
    for raw in (b"abc", b"a\x00b", b"\xff\x00"):
        with pytest.raises(ks.MalformedKey):
            ks.unpack(raw)


def test_reported_collision_is_gone() -> None:
    """The issue's case: versions of `v.txt\\0zzz` fell inside the range of `v.txt`."""
    start, end = ks.span(ks.version_prefix("bkt", "v.txt"))
    assert not start <= ks.version_key("bkt", "v.txt\x00zzz", "0001.x") < end
    assert start <= ks.version_key("bkt", "v.txt", "0001.x") < end
    assert ks.object_key("bkt", "v.txt") != ks.object_key("bkt", "v.txt\x00")


def test_urgent_repair_entries_come_first() -> None:
    urgent = ks.urgent_repair_key(b"\xff" * 16)
    regular = ks.repair_key(b"\x00" * 16)
    assert urgent < regular and ks.stripe_of(urgent) == b"\xff" * 16
    start, end = ks.urgent_repair_span()
    assert start <= urgent < end and not start <= regular < end


def _literal_keys(path: pathlib.Path) -> list[str]:
    """Byte literals that look like a hand-built metadata key prefix (`b"O/"`, `b"X0"`)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            v = node.value
            if 1 <= len(v) <= 5 and v[:1].isupper() and v[-1:] in (b"/", b"0", b"~", b"\x00"):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {v!r}")
    return out


def test_no_other_module_builds_keys() -> None:
    """Only `storage.keyspace` (and the layout-1 migration, which reads old keys) may spell a
    key prefix; everything else asks the keyspace module."""
    allowed = {"storage/keyspace.py", "storage/keyspace_migration.py"}
    found = []
    for top in ("storage", "gateway", "nodes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if str(path.relative_to(ROOT)) not in allowed:
                found += _literal_keys(path)
    assert found == []
