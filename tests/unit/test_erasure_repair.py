"""`ErasureCodec.repair`, repair's per-segment math, against the full decode + re-encode.

Repair used to decode every segment and re-encode all k+m blocks to keep the lost ones
and compare the spare; `repair` codes only the missing rows and the check rows. These
properties pin it to the old result: the same bytes for every lost block, and a
disagreement exactly when the full re-encode would have found one (a lying source is
never copied into a rebuilt shard).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.erasure import ErasureCodec, same

BACKENDS = pytest.mark.parametrize("backend", ["zfec", "isal"])  # one code, both libraries


@st.composite
def stripes(draw: st.DrawFn) -> tuple[int, int, bytes, list[int], list[int]]:
    """(k, m, a segment, the indexes read, the indexes lost): at least k read, lost ones
    not among them."""
    k = draw(st.integers(1, 8))
    m = draw(st.integers(1, 4))
    length = draw(st.integers(1, 64 * k + 7))
    data = random.Random(draw(st.integers(0, 2**32))).randbytes(length)
    order = draw(st.permutations(range(k + m)))
    nread = draw(st.integers(k, k + m))
    read = sorted(order[:nread])
    lost = sorted(order[nread:][:draw(st.integers(0, k + m - nread))])
    return k, m, data, read, lost


def full_reencode(ec: ErasureCodec, blocks: dict[int, bytes], length: int) -> list[bytes]:
    """What repair did before: decode the segment, re-encode every block."""
    return [bytes(b) for b in ec.encode(ec.decode(blocks, length))]


@BACKENDS
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stripes())
def test_repair_gives_the_full_encodes_blocks(backend: str, case: tuple[int, int, bytes,
                                                                        list[int], list[int]],
                                              ) -> None:
    k, m, data, read, lost = case
    ec = ErasureCodec(k, m, backend)
    full = [bytes(b) for b in ec.encode(data)]
    blocks = {i: full[i] for i in read}
    rebuilt, wrong = ec.repair(blocks, len(data), lost)
    assert wrong == []
    assert {i: bytes(b) for i, b in rebuilt.items()} == {i: full[i] for i in lost}
    assert full_reencode(ec, blocks, len(data)) == full


@BACKENDS
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stripes(), st.data())
def test_repair_detects_exactly_what_the_full_reencode_detects(
        backend: str, case: tuple[int, int, bytes, list[int], list[int]], data: st.DataObject) -> None:
    """Blocks altered (same size, valid checksums: a lie): `repair` reports a disagreement
    iff the old decode + re-encode compare did, and otherwise returns the same bytes."""
    k, m, segment, read, lost = case
    ec = ErasureCodec(k, m, backend)
    full = [bytes(b) for b in ec.encode(segment)]
    blocks = {i: full[i] for i in read}
    for i in data.draw(st.lists(st.sampled_from(read), max_size=len(read), unique=True)):
        b = bytearray(blocks[i])
        pos = data.draw(st.integers(0, len(b) - 1))
        b[pos] ^= data.draw(st.integers(1, 255))
        blocks[i] = bytes(b)
    reference = full_reencode(ec, blocks, len(segment))
    old_detects = any(reference[i] != b for i, b in blocks.items())
    rebuilt, wrong = ec.repair(blocks, len(segment), lost)
    assert bool(wrong) == old_detects
    if not wrong:
        assert {i: bytes(b) for i, b in rebuilt.items()} == {i: reference[i] for i in lost}


@BACKENDS
@settings(max_examples=200, deadline=None)
@given(stripes(), st.data())
def test_one_lying_block_among_k_plus_one_is_always_caught(
        backend: str, case: tuple[int, int, bytes, list[int], list[int]], data: st.DataObject) -> None:
    k, m, segment, read, lost = case
    if len(read) <= k:
        read = sorted(set(read) | set(range(k + 1)))[:k + 1]
        lost = [i for i in lost if i not in read]
    ec = ErasureCodec(k, m, backend)
    full = [bytes(b) for b in ec.encode(segment)]
    blocks = {i: full[i] for i in read}
    liar = data.draw(st.sampled_from(read))
    b = bytearray(blocks[liar])
    b[data.draw(st.integers(0, len(b) - 1))] ^= data.draw(st.integers(1, 255))
    blocks[liar] = bytes(b)
    assert ec.repair(blocks, len(segment), lost)[1]


@BACKENDS
def test_nonzero_padding_is_a_disagreement(backend: str) -> None:
    """Blocks that agree on a codeword whose padding is not zero were not written by us:
    the old re-encode (which pads with zeros) refused them, and so does `repair`."""
    ec = ErasureCodec(4, 2, backend)
    length = 4 * 16 - 3  # 3 bytes of padding at the end of block 3
    padded = bytes(range(length)) + b"\x00\x00\x07"
    full = [bytes(b) for b in ec.encode(padded)]
    blocks = {i: full[i] for i in (0, 1, 2, 3, 4)}
    assert ec.repair(blocks, length, [5])[1]
    assert any(full_reencode(ec, blocks, length)[i] != b for i, b in blocks.items())


def test_wrong_sized_block_disagrees_and_too_few_is_an_error() -> None:
    ec = ErasureCodec(2, 1)
    full = [bytes(b) for b in ec.encode(b"abcdefgh")]
    assert ec.repair({0: full[0], 1: full[1] + b"x"}, 8, [2])[1] == [1]
    with pytest.raises(ValueError):
        ec.repair({0: full[0]}, 8, [2])


def test_same_compares_views_and_bytes() -> None:
    raw = bytes(range(256)) * 4
    assert same(memoryview(raw)[10:20], raw[10:20])
    assert not same(memoryview(raw)[10:20], raw[11:21])
    assert same(raw, bytearray(raw))
