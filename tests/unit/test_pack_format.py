"""Pack record format and scan (nodes.packformat): round trip, torn tails cut at every
offset, bit flips in heads, bodies and trailers inside a pack and at its tail."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes import packformat as pf

GOLDEN_HEAD_HEX = ("54504b52010100000102030405060708090a0b0c0d0e0f1000050000"
                   "00000000000000010000000000000007bedef515")

records_st = st.lists(
    st.tuples(st.sampled_from([pf.PUT, pf.TOMBSTONE]), st.binary(min_size=16, max_size=16),
              st.integers(0, 255), st.integers(0, (1 << 64) - 1), st.binary(max_size=300)),
    max_size=8)


def build(recs: list[tuple[int, bytes, int, int, bytes]]) -> tuple[bytes, list[pf.Record]]:
    """A pack of `recs` (a tombstone's body dropped) and the records a scan must find."""
    out = bytearray()
    expect = []
    for kind, stripe, index, ns, body in recs:
        body = b"" if kind == pf.TOMBSTONE else body
        expect.append(pf.Record(kind, stripe, index, ns, len(out), len(body)))
        out += b"".join(pf.encode(kind, stripe, index, ns, [body]))
    return bytes(out), expect


def scan_bytes(data: bytes) -> pf.Scan:
    return pf.scan(pf.bytes_reader(data), len(data))


def test_golden_head() -> None:
    """If this changes, format v1 changed and every stored pack would be unreadable."""
    head = pf.encode_head(pf.PUT, bytes(range(1, 17)), 5, 1, 7)
    assert len(head) == pf.HEAD_BYTES == 48
    assert head.hex() == GOLDEN_HEAD_HEX
    rec = pf.decode_head(head, 0)
    assert rec == pf.Record(pf.PUT, bytes(range(1, 17)), 5, 1, 0, 7)
    assert rec.shard_id == bytes(range(1, 17)).hex() + ".5"


@pytest.mark.parametrize("args", [
    (4, bytes(16), 0, 0, 0),  # unknown kind
    (pf.FOOTER, bytes(range(16)), 0, 0, 0),  # a footer names no shard
    (pf.PUT, bytes(15), 0, 0, 0),  # short stripe id
    (pf.PUT, bytes(16), 256, 0, 0),  # index out of range
    (pf.PUT, bytes(16), 0, 0, pf.MAX_BODY + 1),
    (pf.TOMBSTONE, bytes(16), 0, 0, 1),  # a tombstone has no body
    (pf.PUT, bytes(16), 0, -1, 0),
])
def test_encode_refuses_bad_fields(args: tuple[int, bytes, int, int, int]) -> None:
    with pytest.raises(ValueError):
        pf.encode_head(*args)


@given(records_st)
def test_round_trip(recs: list[tuple[int, bytes, int, int, bytes]]) -> None:
    data, expect = build(recs)
    got = scan_bytes(data)
    assert got.records == expect and got.bad == [] and got.gaps == []
    assert got.end == len(data)
    for rec, (_, _, _, _, body) in zip(got.records, recs, strict=True):
        if rec.kind == pf.PUT:
            assert data[rec.body_offset:rec.body_offset + rec.body_len] == body


@given(records_st, st.data())
def test_torn_tail_at_any_offset(recs: list[tuple[int, bytes, int, int, bytes]],
                                 data: st.DataObject) -> None:
    """A pack cut anywhere keeps exactly the records wholly before the cut, and its good
    bytes end where the last of them ends."""
    full, expect = build(recs)
    cut = data.draw(st.integers(0, len(full)))
    got = scan_bytes(full[:cut])
    kept = [r for r in expect if r.end <= cut]
    assert got.records == kept and got.bad == [] and got.gaps == []
    assert got.end == (kept[-1].end if kept else 0)


def test_every_cut_of_a_small_pack() -> None:
    """The exhaustive version of the property above for one pack: every byte offset."""
    full, expect = build([(pf.PUT, os.urandom(16), 1, 10, os.urandom(100)),
                          (pf.TOMBSTONE, os.urandom(16), 2, 11, b""),
                          (pf.PUT, os.urandom(16), 3, 12, os.urandom(70))])
    for cut in range(len(full) + 1):
        got = scan_bytes(full[:cut])
        kept = [r for r in expect if r.end <= cut]
        assert (got.records, got.end) == (kept, kept[-1].end if kept else 0), cut


@given(records_st, st.binary(min_size=1, max_size=200))
def test_garbage_tail(recs: list[tuple[int, bytes, int, int, bytes]], junk: bytes) -> None:
    """Bytes after the last record that make no complete record are a torn tail."""
    full, expect = build(recs)
    got = scan_bytes(full + junk)
    assert got.records == expect and got.end == len(full)


def _three() -> tuple[bytes, list[pf.Record]]:
    return build([(pf.PUT, os.urandom(16), i, i, os.urandom(64)) for i in range(3)])


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x10
    return bytes(b)


@pytest.mark.parametrize("where", range(pf.HEAD_BYTES))
def test_flip_in_a_head_inside_is_a_gap(where: int) -> None:
    """A middle record whose head fails: its bytes are a gap; the records around it stay."""
    data, (a, b, c) = _three()
    got = scan_bytes(_flip(data, b.offset + where))
    assert got.records == [a, c] and got.bad == [] and got.gaps == [(b.offset, c.offset)]
    assert got.end == len(data)


@pytest.mark.parametrize("where", range(pf.TRAILER_BYTES))
def test_flip_in_a_trailer_inside_is_bad(where: int) -> None:
    """A middle record whose head verifies but whose trailer does not is skipped by its
    length and reported bad; nothing else is lost."""
    data, (a, b, c) = _three()
    got = scan_bytes(_flip(data, b.end - pf.TRAILER_BYTES + where))
    assert got.records == [a, c] and got.bad == [b] and got.gaps == []
    assert got.end == len(data)


def test_flip_in_a_body_is_left_to_the_frames() -> None:
    """The record format does not checksum bodies: a body's shard header and frames carry
    their own crc32c (checked by readers and scrub without keys)."""
    data, recs = _three()
    got = scan_bytes(_flip(data, recs[1].body_offset + 5))
    assert got.records == recs and got.end == len(data)


@pytest.mark.parametrize("where", [0, 20, pf.HEAD_BYTES - 1, -1])
def test_damage_to_the_last_record_is_a_torn_tail(where: int) -> None:
    """At the tail, damage and a torn write look alike: the good bytes end before it (the
    store sets the tail's bytes aside before it truncates, so nothing is destroyed)."""
    data, (a, b, c) = _three()
    at = c.offset + where if where >= 0 else c.end - 1
    got = scan_bytes(_flip(data, at))
    assert got.records == [a, b] and got.end == c.offset


def test_valid_looking_magic_in_garbage_is_not_a_record() -> None:
    """The forward search after damage wants a complete record, not just the magic."""
    data, (a, b, c) = _three()
    junk = pf.MAGIC + os.urandom(60)
    damaged = data[:b.offset] + junk + data[c.offset:]
    got = scan_bytes(damaged)
    assert got.records == [a, pf.Record(c.kind, c.stripe, c.index, c.time_ns,
                                        b.offset + len(junk), c.body_len)]
    assert got.gaps == [(b.offset, b.offset + len(junk))]


def test_search_crosses_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record after a gap is found wherever it sits relative to the search's chunks."""
    monkeypatch.setattr(pf, "SEARCH_CHUNK", 7)
    data, (a, b, c) = _three()
    for pad in range(1, 12):
        damaged = data[:b.offset] + b"\xff" * pad + data[c.offset:]
        got = scan_bytes(damaged)
        assert [r.index for r in got.records] == [0, 2], pad
        assert got.gaps == [(b.offset, b.offset + pad)]


# -- the footer of a sealed pack ---------------------------------------------------------


def sealed(recs: list[tuple[int, bytes, int, int, bytes]]) -> tuple[bytes, list[pf.Record]]:
    data, expect = build(recs)
    return data + pf.encode_footer(expect, len(data), 42), expect


@given(records_st)
def test_a_footer_lists_the_packs_records(recs: list[tuple[int, bytes, int, int, bytes]]
                                          ) -> None:
    data, expect = sealed(recs)
    assert pf.read_footer(pf.bytes_reader(data), len(data)) == expect
    got = scan_bytes(data)  # a scan sees the footer as one more complete record
    assert got.records[:-1] == expect and got.records[-1].kind == pf.FOOTER
    assert got.end == len(data) and not got.gaps and not got.bad


@given(records_st.filter(bool), st.data())
def test_any_flip_in_a_footer_makes_it_unusable(recs: list[tuple[int, bytes, int, int, bytes]],
                                                data: st.DataObject) -> None:
    """A footer is trusted only whole: a bit flipped anywhere in it (head, entries, crc,
    offset, magic, trailer) gives None, and the caller scans."""
    raw, _ = sealed(recs)
    start = len(build(recs)[0])
    at = data.draw(st.integers(start, len(raw) - 1))
    bad = bytearray(raw)
    bad[at] ^= 1 << data.draw(st.integers(0, 7))
    assert pf.read_footer(pf.bytes_reader(bytes(bad)), len(bad)) is None


def test_no_footer_a_cut_footer_or_one_that_does_not_tile() -> None:
    recs = [(pf.PUT, bytes(range(16)), i, i, os.urandom(50 + i)) for i in range(5)]
    data, expect = build(recs)
    assert pf.read_footer(pf.bytes_reader(data), len(data)) is None  # the active pack
    full, _ = sealed(recs)
    for cut in range(len(data), len(full)):
        assert pf.read_footer(pf.bytes_reader(full[:cut]), cut) is None
    for listed in (expect[1:], expect[:-1], expect[:2] + expect[3:]):
        holed = data + pf.encode_footer(listed, len(data), 1)
        assert pf.read_footer(pf.bytes_reader(holed), len(holed)) is None
