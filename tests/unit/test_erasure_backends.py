"""The two implementations of the erasure code (zfec, ISA-L) make and read the same blocks.

ISA-L is the default when installed (pyeclib's wheel bundles it, and pyproject depends on
pyeclib, so it must load here); zfec is the fallback. Shards written by either are decoded,
checked and rebuilt by the other, and the pinned stripe vector (written with zfec) is
reproduced byte for byte by ISA-L.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import isal
from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec, generator
from storage.errors import IntegrityError
from storage.pipeline import StripeCodec, segment_length
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES, ShardHeader
from tests.vectors import generate

BACKENDS = ("zfec", "isal")


@st.composite
def stripes(draw: st.DrawFn) -> tuple[int, int, bytes, list[int]]:
    """(k, m, input, a k-subset of the k+m block indexes)."""
    k = draw(st.integers(1, 12))
    m = draw(st.integers(1, 6))
    data = draw(st.binary(min_size=1, max_size=3000))
    subset = draw(st.lists(st.integers(0, k + m - 1), min_size=k, max_size=k, unique=True))
    return k, m, data, subset


@settings(max_examples=300, deadline=None)
@given(stripes())
def test_both_backends_make_the_same_blocks_and_decode_any_k_subset(
        case: tuple[int, int, bytes, list[int]]) -> None:
    k, m, data, subset = case
    blocks = {b: [bytes(x) for x in ErasureCodec(k, m, b).encode(data)] for b in BACKENDS}
    assert blocks["isal"] == blocks["zfec"]
    assert len(blocks["isal"]) == k + m
    assert b"".join(blocks["isal"][:k])[:len(data)] == data  # systematic
    for writer, reader in itertools.product(BACKENDS, BACKENDS):
        chosen = {i: blocks[writer][i] for i in subset}
        assert ErasureCodec(k, m, reader).decode(chosen, len(data)) == data


@settings(max_examples=100, deadline=None)
@given(stripes(), st.sampled_from(BACKENDS))
def test_rebuild_of_lost_blocks_matches_the_written_ones(
        case: tuple[int, int, bytes, list[int]], backend: str) -> None:
    k, m, data, subset = case
    written = [bytes(x) for x in ErasureCodec(k, m, "zfec").encode(data)]
    lost = [i for i in range(k + m) if i not in subset]
    rebuilt = ErasureCodec(k, m, backend).rebuild({i: written[i] for i in subset},
                                                  len(data), lost)
    assert {i: bytes(b) for i, b in rebuilt.items()} == {i: written[i] for i in lost}


def test_isal_loads_from_the_installed_pyeclib() -> None:
    """pyproject depends on pyeclib, whose manylinux wheel bundles libisal: it must load."""
    lib = isal.load()
    assert lib is not None, "ISA-L not found: is pyeclib installed?"
    assert ErasureCodec(4, 2).backend == "isal"
    assert ErasureCodec(4, 2, "zfec").backend == "zfec"


def test_without_isal_the_codec_falls_back_to_zfec() -> None:
    """A host where neither pyeclib's libisal nor a system libisal can be found codes with
    zfec (in a fresh interpreter, so the process-wide lookup is not already cached)."""
    code = """if True:
        import ctypes.util, importlib.util, os
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "pyeclib" else real(name, *a)
        ctypes.util.find_library = lambda name: None
        from storage.erasure import ErasureCodec
        c = ErasureCodec(4, 2)
        data = os.urandom(5000)
        blocks = dict(enumerate(bytes(b) for b in c.encode(data)))
        assert c.decode({i: blocks[i] for i in (2, 3, 4, 5)}, len(data)) == data
        print(c.backend)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "zfec"


def test_zfec_generator_matrix_is_pinned() -> None:
    """The parity rows of 4+2 (what ISA-L is given); a change would misread every shard."""
    assert list(generator(4, 2)) == [119, 64, 56, 14, 199, 167, 13, 108]


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown erasure backend"):
        ErasureCodec(4, 2, "jerasure")


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(generate.PATH.read_text())


@pytest.mark.parametrize("backend", BACKENDS)
def test_pinned_stripe_vector_encodes_and_decodes_with_each_backend(golden: dict,
                                                                    backend: str) -> None:
    """The golden stripe (written by zfec when it was pinned) is what ISA-L writes too, and
    every k-subset of its blocks opens with either backend."""
    codec = StripeCodec(cipher=SegmentCipher(generate.DEK), codec=ErasureCodec(4, 2, backend),
                        identity=generate.IDENTITY, part=1, stripe_id=generate.STRIPE_ID,
                        segment_size=generate.SEGMENT_SIZE)
    pt = generate.PLAINTEXT
    headers = codec.headers()
    for s, frames in enumerate(golden["sealed_stripe"]):
        seg = pt[s * generate.SEGMENT_SIZE:(s + 1) * generate.SEGMENT_SIZE]
        last = s == len(golden["sealed_stripe"]) - 1
        assert [f.hex() for f in codec.encode(headers, s, last, seg)] == frames
        for subset in itertools.combinations(range(6), 4):
            blocks = {i: bytes.fromhex(frames[i])[FRAME_HEAD_BYTES:] for i in subset}
            plen = segment_length(len(pt), generate.SEGMENT_SIZE, s)
            assert codec.decode(s, last, plen, blocks) == seg


def test_shard_header_codec_id(golden: dict) -> None:
    """Byte 9 of the header names the code: 0 in every shard written so far (it was a
    reserved zero); an unknown code is refused, not misdecoded."""
    raw = bytes.fromhex(golden["shard_header"])
    assert raw[9] == 0 and ShardHeader.unpack(raw).codec == 0
    h = ShardHeader.unpack(raw)
    body = bytearray(raw[:HEADER_BYTES - 4])
    body[9] = 7
    forged = bytes(body) + crc32c.crc32c(bytes(body)).to_bytes(4, "big")
    with pytest.raises(IntegrityError, match="unsupported erasure codec 7"):
        ShardHeader.unpack(forged)
    assert h.pack() == raw
