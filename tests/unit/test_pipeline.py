"""The data-path codec: segment -> AES-GCM -> zfec -> framed blocks, and every way back.

Any k of k+m shards rebuild every segment; a flipped bit in a shard file is caught by its
frame checksum; a consistently rewritten or misplaced segment is caught by the GCM tag.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from storage.crypto import keys
from storage.crypto.aead import TAG_BYTES, SegmentCipher
from storage.erasure import ErasureCodec, block_size
from storage.errors import IntegrityError
from storage.keyspace import object_key, version_key
from storage.pipeline import StripeCodec, segment_count, segment_length
from storage.records import Bucket, ObjectVersion, pack, unpack
from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    FrameReader,
    ShardHeader,
    pack_frame,
    verify_frame,
)
from tests.vectors import generate

SEED = 20260101


def make_codec(k: int, m: int, segment_size: int, identity: str = "obj",
               part: int = 1, dek: bytes = b"k" * 32, stripe: bytes = b"s" * 16) -> StripeCodec:
    return StripeCodec(cipher=SegmentCipher(dek), codec=ErasureCodec(k, m), identity=identity,
                       part=part, stripe_id=stripe, segment_size=segment_size)


def encode_object(codec: StripeCodec, data: bytes) -> list[bytes]:
    """The k+m shard files (header + frames) of one part, as a node would store them."""
    headers = codec.headers()
    files = [bytearray(h.pack()) for h in headers]
    n = segment_count(len(data), codec.segment_size)
    for i in range(n):
        seg = data[i * codec.segment_size:(i + 1) * codec.segment_size]
        for f, frame in zip(files, codec.encode(headers, i, i == n - 1, seg), strict=True):
            f += frame
    return [bytes(f) for f in files]


def read_file(raw: bytes, chunk: int = 7) -> list[bytes]:
    """Parse one shard file through the streaming reader, in small uneven pieces."""
    reader = FrameReader()
    blocks: list[bytes] = []
    for off in range(0, len(raw), chunk):
        for seg, blk in reader.feed(raw[off:off + chunk]):
            assert seg == len(blocks)
            blocks.append(blk)
    if reader.pending:
        raise IntegrityError("truncated frame")
    return blocks


def decode_object(codec: StripeCodec, files: dict[int, bytes], size: int) -> bytes:
    parsed = {i: read_file(raw) for i, raw in files.items()}
    n = segment_count(size, codec.segment_size)
    out = bytearray()
    for s in range(n):
        blocks = {i: b[s] for i, b in parsed.items()}
        out += codec.decode(s, s == n - 1, segment_length(size, codec.segment_size, s), blocks)
    return bytes(out)


# -- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize(("k", "m"), [(4, 2), (2, 1)])
@pytest.mark.parametrize("size_in_segments", [1, 2.5, 3])
def test_every_k_subset_rebuilds_the_object(k: int, m: int, size_in_segments: float) -> None:
    seg = 4096
    size = int(seg * size_in_segments)
    data = random.Random(SEED + size).randbytes(size)
    codec = make_codec(k, m, seg)
    files = encode_object(codec, data)
    assert len(files) == k + m
    subsets = list(itertools.combinations(range(k + m), k))
    assert len(subsets) == {(4, 2): 15, (2, 1): 3}[(k, m)]
    for subset in subsets:
        assert decode_object(codec, {i: files[i] for i in subset}, size) == data, subset


@pytest.mark.parametrize("size", [1, 15, 16, 17, 1023, 1024, 1025, 4095, 4096, 4097,
                                  3 * 4096 - 1, 3 * 4096 + 1])
def test_segment_sizes_including_short_last_segment(size: int) -> None:
    seg = 1024
    data = random.Random(size).randbytes(size)
    codec = make_codec(4, 2, seg)
    files = encode_object(codec, data)
    n = segment_count(size, seg)
    assert n == -(-size // seg)
    last_len = segment_length(size, seg, n - 1)
    assert 0 < last_len <= seg
    blocks = read_file(files[0])
    assert len(blocks) == n
    assert all(len(b) == codec.headers()[0].block_size for b in blocks[:-1])
    assert len(blocks[-1]) == block_size(last_len + TAG_BYTES, 4)
    # Parity-heavy subset: the worst case for zfec.
    assert decode_object(codec, {2: files[2], 3: files[3], 4: files[4], 5: files[5]},
                         size) == data


def test_sealed_segments_recode_under_another_profile_without_the_key() -> None:
    """SSE-C transitions: a codec without a cipher moves the sealed segments from a 4+2
    stripe to a 3+3 stripe under a new stripe id; the key then opens them, because the
    associated data binds identity, part, position and last flag, not the layout."""
    seg = 1024
    size = 3 * seg + 100
    data = random.Random(SEED).randbytes(size)
    hot = make_codec(4, 2, seg, stripe=b"h" * 16)
    files = encode_object(hot, data)
    n = segment_count(size, seg)
    parsed = {i: read_file(files[i]) for i in (1, 3, 4, 5)}
    moving = StripeCodec(cipher=None, codec=ErasureCodec(4, 2), identity="obj", part=1,
                         stripe_id=b"h" * 16, segment_size=seg)
    sealed = [moving.decode(s, s == n - 1, segment_length(size, seg, s),
                            {i: b[s] for i, b in parsed.items()}) for s in range(n)]
    assert moving.input_segment == seg + TAG_BYTES
    assert [len(x) for x in sealed] == [seg + TAG_BYTES] * (n - 1) + [100 + TAG_BYTES]
    assert all(data[:64] not in x for x in sealed)
    cold = StripeCodec(cipher=None, codec=ErasureCodec(3, 3), identity="obj", part=1,
                       stripe_id=b"c" * 16, segment_size=seg)
    headers = cold.headers()
    out = [bytearray(h.pack()) for h in headers]
    for s, x in enumerate(sealed):
        for f, frame in zip(out, cold.encode(headers, s, s == n - 1, x), strict=True):
            f += frame
    opener = make_codec(3, 3, seg, stripe=b"c" * 16)
    assert decode_object(opener, {i: bytes(out[i]) for i in (0, 4, 5)}, size) == data
    with pytest.raises(IntegrityError):  # the AAD still binds the part number
        decode_object(make_codec(3, 3, seg, part=2, stripe=b"c" * 16),
                      {i: bytes(out[i]) for i in (0, 1, 2)}, size)


def test_shard_blocks_hold_no_plaintext() -> None:
    data = b"PLAINTEXT-MARKER" * 512
    codec = make_codec(4, 2, 2048)
    for f in encode_object(codec, data):
        assert b"PLAINTEXT" not in f and b"MARKER" not in f


def test_segment_helpers() -> None:
    assert segment_count(0, 10) == 0
    assert segment_count(1, 10) == 1
    assert segment_count(10, 10) == 1
    assert segment_count(11, 10) == 2
    assert segment_length(25, 10, 2) == 5
    assert segment_length(20, 10, 1) == 10


def test_erasure_rebuild_of_lost_blocks() -> None:
    ec = ErasureCodec(4, 2)
    data = random.Random(1).randbytes(1001)
    blocks = ec.encode(data)
    have = {1: blocks[1], 3: blocks[3], 4: blocks[4], 5: blocks[5]}
    assert ec.rebuild(have, len(data), [0, 2]) == {0: blocks[0], 2: blocks[2]}
    with pytest.raises(ValueError):
        ec.decode({0: blocks[0]}, len(data))


# -- checksums: every flipped bit is caught ----------------------------------------------------

@pytest.mark.parametrize(("k", "m"), [(2, 1), (4, 2)])
def test_every_flipped_bit_in_a_shard_file_is_detected(k: int, m: int) -> None:
    codec = make_codec(k, m, 48)
    data = random.Random(SEED).randbytes(48 * 2 + 20)
    files = encode_object(codec, data)
    for idx, raw in enumerate(files):
        clean = read_file(raw)
        for bit in range(len(raw) * 8):
            bad = bytearray(raw)
            bad[bit // 8] ^= 1 << (bit % 8)
            try:
                got = read_file(bytes(bad))
            except IntegrityError:
                continue
            # A corrupted length may leave a shorter stream that parses: it must differ.
            assert got != clean, f"shard {idx} bit {bit} undetected"


def test_verify_frame_checks_block_and_position() -> None:
    codec = make_codec(4, 2, 1024)
    h = codec.headers()[1]
    frame = codec.encode(codec.headers(), 2, False, b"x" * 1024)[1]
    length, crc = FRAME_HEAD.unpack_from(frame)
    block = frame[FRAME_HEAD_BYTES:]
    verify_frame(h, 2, block, crc)
    for pos in (0, length // 2, length - 1):
        bad = bytearray(block)
        bad[pos] ^= 0x80
        with pytest.raises(IntegrityError, match="checksum"):
            verify_frame(h, 2, bytes(bad), crc)
    with pytest.raises(IntegrityError):  # same block claimed at another segment number
        verify_frame(h, 3, block, crc)
    with pytest.raises(IntegrityError):  # same block claimed by another shard index
        verify_frame(codec.headers()[2], 2, block, crc)
    other = make_codec(4, 2, 1024, stripe=b"t" * 16).headers()[1]
    with pytest.raises(IntegrityError):  # same block claimed by another stripe
        verify_frame(other, 2, block, crc)


def test_truncated_or_padded_files_are_detected() -> None:
    codec = make_codec(2, 1, 100)
    raw = encode_object(codec, b"z" * 250)[0]
    with pytest.raises(IntegrityError):
        read_file(raw[:-1])
    with pytest.raises(IntegrityError):
        read_file(raw[: HEADER_BYTES - 1] + b"\x00")
    with pytest.raises(IntegrityError):
        read_file(raw + b"\x00" * FRAME_HEAD_BYTES)  # zero-length frame


# -- authentication: rewritten or misplaced segments fail AES-GCM -----------------------------

def _segments(codec: StripeCodec, data: bytes) -> list[dict[int, bytes]]:
    """Per segment: index -> verified block."""
    files = encode_object(codec, data)
    parsed = [read_file(f) for f in files]
    return [{i: parsed[i][s] for i in range(len(files))} for s in range(len(parsed[0]))]


def _refresh_checksum(header: ShardHeader, segment: int, block: bytes) -> bytes:
    """What a malicious or buggy node could do: rewrite a block with a valid checksum."""
    frame = pack_frame(header, segment, block)
    length, crc = FRAME_HEAD.unpack_from(frame)
    verify_frame(header, segment, frame[FRAME_HEAD_BYTES:], crc)
    return frame[FRAME_HEAD_BYTES:]


def test_tampered_ciphertext_fails_authentication() -> None:
    codec = make_codec(4, 2, 1024)
    data = random.Random(3).randbytes(2500)
    segs = _segments(codec, data)
    headers = codec.headers()
    assert codec.decode(0, False, 1024, segs[0]) == data[:1024]
    for shard in range(4):  # a data block: decode uses blocks 0..3 directly
        for pos in (0, 100, len(segs[0][shard]) - 1):
            blocks = dict(segs[0])
            bad = bytearray(blocks[shard])
            bad[pos] ^= 0x01
            blocks[shard] = _refresh_checksum(headers[shard], 0, bytes(bad))
            with pytest.raises(IntegrityError, match="authentication"):
                codec.decode(0, False, 1024, blocks)
    blocks = {i: segs[0][i] for i in (0, 1, 2, 4)}  # parity block in the decode set
    bad = bytearray(blocks[4])
    bad[7] ^= 0x10
    blocks[4] = bytes(bad)
    with pytest.raises(IntegrityError):
        codec.decode(0, False, 1024, blocks)


def test_segment_moved_to_another_position_fails() -> None:
    codec = make_codec(4, 2, 1024)
    data = random.Random(4).randbytes(3 * 1024)
    segs = _segments(codec, data)
    assert codec.decode(1, False, 1024, segs[1]) == data[1024:2048]
    with pytest.raises(IntegrityError):
        codec.decode(1, False, 1024, segs[0])  # segment 0 replayed as segment 1
    with pytest.raises(IntegrityError):
        codec.decode(0, False, 1024, segs[1])
    with pytest.raises(IntegrityError):  # truncation: a middle segment claimed as last
        codec.decode(1, True, 1024, segs[1])
    with pytest.raises(IntegrityError):  # extension: the last segment claimed as not last
        codec.decode(2, False, 1024, segs[2])


@pytest.mark.parametrize("change", [
    {"identity": "another-object"},
    {"part": 2},
    {"dek": b"K" * 32},
])
def test_segment_moved_to_another_object_or_part_fails(change: dict) -> None:
    codec = make_codec(4, 2, 1024)
    data = random.Random(5).randbytes(1024)
    segs = _segments(codec, data)
    assert codec.decode(0, True, 1024, segs[0]) == data
    other = make_codec(4, 2, 1024, **change)
    with pytest.raises(IntegrityError):
        other.decode(0, True, 1024, segs[0])


def test_same_plaintext_under_different_identity_differs() -> None:
    data = b"a" * 1024
    a = _segments(make_codec(4, 2, 1024, identity="x"), data)[0]
    b = _segments(make_codec(4, 2, 1024, dek=b"j" * 32), data)[0]
    assert a[0] != b[0]


# -- golden vectors ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(generate.PATH.read_text())


def test_golden_shard_header_and_frame(golden: dict) -> None:
    h = generate.header()
    assert h.pack().hex() == golden["shard_header"]
    assert len(h.pack()) == HEADER_BYTES == 44
    assert ShardHeader.unpack(bytes.fromhex(golden["shard_header"])) == h
    assert pack_frame(h, 3, b"tessera").hex() == golden["frame_segment3_tessera"]
    codec = generate.stripe_codec()
    assert [x.pack().hex() for x in codec.headers()] == golden["stripe_headers"]


def test_golden_sealed_stripe(golden: dict) -> None:
    """Fixed DEK + counter nonce + fixed AAD: the whole encoded stripe is pinned byte for byte."""
    assert keys.object_identity("tenant-a", "bucket-b", "key/c", "version-d") == \
        golden["object_identity"]
    assert keys.segment_aad(generate.IDENTITY, 1, 0, True).hex() == \
        golden["segment_aad_part1_seg0_last"]
    assert generate.sealed_stripe() == golden["sealed_stripe"]
    codec = generate.stripe_codec()
    pt = generate.PLAINTEXT
    out = bytearray()
    for s, frames in enumerate(golden["sealed_stripe"]):
        blocks = {i: bytes.fromhex(f)[FRAME_HEAD_BYTES:] for i, f in enumerate(frames)
                  if i in (1, 3, 4, 5)}
        out += codec.decode(s, s == 1, segment_length(len(pt), 64, s), blocks)
    assert bytes(out) == pt


def test_golden_records_written_earlier_still_decode(golden: dict) -> None:
    """Backward compatibility: records pinned by an earlier build decode to the same values."""
    old = ObjectVersion.decode(bytes.fromhex(golden["record_object_version_initial"]))
    assert old == generate.object_version()
    # every field written, also those at their default (before `lean_fields`)
    full = ObjectVersion.decode(bytes.fromhex(golden["record_object_version_full_initial"]))
    assert full == generate.object_version()


def test_golden_records(golden: dict) -> None:
    """Encoding is pinned; after a deliberate additive change run tests.vectors.generate."""
    v = generate.object_version()
    assert v.encode().hex() == golden["record_object_version"], \
        "record encoding changed: if deliberate and compatible, python -m tests.vectors.generate"
    assert ObjectVersion.decode(bytes.fromhex(golden["record_object_version"])) == v
    b = generate.bucket()
    assert b.encode().hex() == golden["record_bucket"]
    assert Bucket.decode(bytes.fromhex(golden["record_bucket"])) == b
    assert object_key("bucket-b", "key/c").hex() == golden["key_object"]
    assert version_key("bucket-b", "key/c", "00001.v").hex() == golden["key_version"]


def test_golden_vectors_file_is_complete(golden: dict) -> None:
    assert set(generate.compute()) | {"wrapped_dek", "record_object_version_initial",
                                      "record_object_version_full_initial"} == set(golden)


def test_records_ignore_unknown_fields_and_carry_a_version() -> None:
    """A newer writer may add fields; an older reader must still decode the record."""
    raw = unpack(generate.bucket().encode())
    assert raw["fv"] == 1
    raw["added_later"] = [1, 2]
    assert Bucket.decode(pack(raw)) == generate.bucket()
    raw = unpack(generate.object_version().encode())
    raw["added_later"] = 1
    raw["parts"][0]["added_later"] = {"x": 1}
    assert ObjectVersion.decode(pack(raw)) == generate.object_version()


def _blocks(codec: StripeCodec, plain: bytes) -> dict[int, bytes]:
    frames = codec.encode(codec.headers(), 0, True, plain)
    return {i: f[FRAME_HEAD_BYTES:] for i, f in enumerate(frames)}


@pytest.mark.parametrize("liars", [(0,), (3,), (5,), (1, 4)])
def test_authenticate_names_lying_blocks(liars: tuple[int, ...]) -> None:
    """Blocks with other bytes (as a shard with valid CRCs but a lie would give): the first
    k no longer authenticate, a k-subset without the liars does, and the liars are named."""
    codec = make_codec(4, 2, 4096)
    plain = random.Random(7).randbytes(3000)
    blocks = _blocks(codec, plain)
    for i in liars:
        blocks[i] = random.Random(i).randbytes(len(blocks[i]))
    if 0 in liars or 3 in liars:
        with pytest.raises(IntegrityError):
            codec.decode(0, True, len(plain), {i: blocks[i] for i in range(4)})
    honest = _blocks(codec, plain)
    got, named = codec.authenticate(0, True, len(plain), blocks)
    assert got == plain and named == sorted(liars)
    assert codec.audit(0, True, len(plain), blocks) == sorted(liars)
    # What repair rewrites the liars from: the authenticated codeword, liars' own blocks
    # offered too (they may be honest in other segments).
    sealed, named = codec.reference(0, True, len(plain), blocks)
    assert named == sorted(liars)
    assert dict(enumerate(codec.codec.encode(sealed))) == honest


def test_authenticate_fails_beyond_the_spare_blocks() -> None:
    codec = make_codec(4, 2, 4096)
    plain = random.Random(8).randbytes(3000)
    blocks = _blocks(codec, plain)
    for i in (0, 2, 4):  # three liars, two spare blocks: no k honest ones
        blocks[i] = bytes(len(blocks[i]))
    with pytest.raises(IntegrityError):
        codec.authenticate(0, True, len(plain), blocks)
    with pytest.raises(IntegrityError):  # repair never rewrites from a guess either
        codec.reference(0, True, len(plain), blocks)
    from storage.rebuild import SourcesDisagree, _rebuild_from

    with pytest.raises(SourcesDisagree):
        _rebuild_from(codec.reference, codec.codec, 0, True, len(plain), blocks, [0, 2, 4])


def test_audit_without_a_key_locates_one_liar_by_consistency() -> None:
    """SSE-C data (no key in the cluster): the codeword k+1 blocks agree on is the truth."""
    sealed_codec = StripeCodec(cipher=None, codec=ErasureCodec(4, 2), identity="obj", part=1,
                               stripe_id=b"s" * 16, segment_size=4096)
    sealed = random.Random(9).randbytes(3016)
    blocks = _blocks(sealed_codec, sealed)
    assert sealed_codec.audit(0, True, len(sealed) - TAG_BYTES, blocks) == []
    blocks[2] = bytes(len(blocks[2]))
    assert sealed_codec.audit(0, True, len(sealed) - TAG_BYTES, blocks) == [2]
    blocks[5] = bytes(len(blocks[5]))  # two liars, six blocks: no codeword with k+1 support
    with pytest.raises(IntegrityError):
        sealed_codec.audit(0, True, len(sealed) - TAG_BYTES, blocks)


def test_keyless_rebuild_checks_named_liars_blocks_and_falls_back_to_unnamed() -> None:
    """Repair without the key (SSE-C): shards 0 and 1 were named liars (for other
    segments), and shard 2 lies in this one but nobody has named it yet. The named shards'
    honest blocks must outvote it: rebuilding 0 and 1 from exactly k unnamed blocks would
    write shard 2's lie into both. A segment with no codeword more than k blocks agree on
    (a lost shard besides the liar) is rebuilt from the k unnamed shards instead."""
    from storage.rebuild import SourcesDisagree, _rebuild_from

    codec = StripeCodec(cipher=None, codec=ErasureCodec(4, 2), identity="obj", part=1,
                        stripe_id=b"s" * 16, segment_size=4096)
    sealed = random.Random(10).randbytes(3016)
    plain_len = len(sealed) - TAG_BYTES
    honest = _blocks(codec, sealed)
    blocks = {**honest, 2: random.Random(2).randbytes(len(honest[2]))}
    rebuilt, wrong = _rebuild_from(codec.reference, codec.codec, 0, True, plain_len, blocks,
                                   [0, 1], trusted={2, 3, 4, 5})
    assert {i: bytes(b) for i, b in rebuilt.items()} == {0: honest[0], 1: honest[1]}
    assert wrong == [2]
    # shard 5 lost, named liar 0 lies here: no k+1 agreement, the unnamed four decide
    blocks = {i: honest[i] for i in range(5)}
    blocks[0] = random.Random(0).randbytes(len(honest[0]))
    rebuilt, wrong = _rebuild_from(codec.reference, codec.codec, 0, True, plain_len, blocks,
                                   [0, 5], trusted={1, 2, 3, 4})
    assert {i: bytes(b) for i, b in rebuilt.items()} == {0: honest[0], 5: honest[5]}
    assert wrong == []
    with pytest.raises(SourcesDisagree):  # no trusted set (a keyed reference): no guess
        _rebuild_from(codec.reference, codec.codec, 0, True, plain_len, blocks, [0, 5])
