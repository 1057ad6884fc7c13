"""Attacks on the lying-shard read path (issue 11), on real processes.

Lies placed by segment: a read must return the right bytes whenever each segment still has k
honest shards, and otherwise fail without ever handing the client wrong bytes. A segment
that fails after the response headers went out must end the connection, not append an
error document to the body (which a ranged GET, carrying no checksum, took as data).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    pack_frame,
)
from storage.shards.ids import shard_id
from tests.integration.cluster import LocalCluster

MiB = 1 << 20
SIZE = 3 * MiB + 5  # segments 0-2 of 1 MiB, segment 3 of 5 bytes


@pytest.fixture(scope="module")
def lc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Deep scrub off: only the reads below meet the lies."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_DEEP_SCRUB_RATE_MBPS", "0")
        c = LocalCluster(tmp_path_factory.mktemp("lying-attacks") / "data").start()
    yield c
    c.stop()


def lie_in(c: LocalCluster, bucket: str, key: str, plan: dict[int, set[int]]) -> None:
    """Rewrite the given segments of the given shards with random bytes under valid CRCs."""
    part = c.manifest(bucket, key).parts[0]
    for index, segments in plan.items():
        sid = shard_id(part.stripe_id, index)
        node = part.nodes[index]
        assert node is not None
        path = c.shard(node, sid)  # its file, or its packed record
        out = bytearray(path.read_bytes())
        header = ShardHeader.unpack(bytes(out[:HEADER_BYTES]))
        rnd = random.Random(f"{key}/{index}")
        off, seg = HEADER_BYTES, 0
        while off + FRAME_HEAD_BYTES <= len(out):
            length, _ = FRAME_HEAD.unpack_from(out, off)
            if seg in segments:
                out[off:off + FRAME_HEAD_BYTES + length] = pack_frame(header, seg,
                                                                     rnd.randbytes(length))
            off += FRAME_HEAD_BYTES + length
            seg += 1
        path.write_bytes(bytes(out))  # a file replaced whole, a record in place


def read(s3: Any, bucket: str, key: str, rng: str | None = None) -> bytes | None:
    """The body, or None when the read failed (an error status or a cut-off body)."""
    try:
        kw = {"Range": rng} if rng else {}
        return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()
    except (ClientError, BotoCoreError):
        return None


def test_a_segment_failing_mid_body_never_becomes_body_bytes(lc: LocalCluster) -> None:
    s3 = lc.client()
    s3.create_bucket(Bucket="midbody")
    body = random.Random(1).randbytes(SIZE)
    s3.put_object(Bucket="midbody", Key="o", Body=body)
    lie_in(lc, "midbody", "o", {0: {3}, 1: {3}, 5: {3}})  # 3 liars > m: segment 3 is lost
    # The range starts in segment 2 (readable, so the 206 is sent), then segment 3 fails.
    for rng, start in ((f"bytes={SIZE - 10}-", SIZE - 10), (f"bytes={MiB}-", MiB)):
        got = read(s3, "midbody", "o", rng)
        assert got is None or got == body[start:], f"{rng}: wrong bytes returned"
        assert got is None
    assert read(s3, "midbody", "o") is None
    # the earlier segments still read, and the connection pool is healthy afterwards
    assert read(s3, "midbody", "o", "bytes=0-99") == body[:100]


def live_shards(c: LocalCluster, bucket: str, key: str) -> list[bytes | None]:
    """The bytes of each shard file the manifest now names (None where it is missing)."""
    part = c.manifest(bucket, key).parts[0]
    out: list[bytes | None] = []
    for index, node in enumerate(part.nodes):
        sid = shard_id(part.stripe_id, index)
        path = c.shard(str(node), sid) if node else None
        out.append(path.read_bytes() if path is not None and path.exists() else None)
    return out


SSEC = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}


@pytest.mark.parametrize("sse", [{}, SSEC], ids=["cluster-key", "sse-c"])
def test_liars_in_different_segments_never_cost_the_object(lc: LocalCluster,
                                                           sse: dict[str, str]) -> None:
    """Lies are per segment: shard 0 lies in segment 0, 1 in 1, 2 in 2-3, so every segment
    keeps k=4 honest blocks. Naming 0 and 1 must not take away the honest blocks segment 2
    needs (whole-shard quarantine made it unreadable forever), and repair must bring the
    stripe back to all-honest shards (it treated each liar as wholly missing). Without the
    key (SSE-C) repair trusts the codeword k+1 shards agree on, as every segment has one."""
    s3 = lc.client()
    bucket = "spread-ssec" if sse else "spread"
    s3.create_bucket(Bucket=bucket)
    body = random.Random(7).randbytes(SIZE)
    s3.put_object(Bucket=bucket, Key="o", Body=body, **sse)

    def get(rng: str | None = None) -> bytes | None:
        try:
            kw = {"Range": rng} if rng else {}
            return s3.get_object(Bucket=bucket, Key="o", **kw, **sse)["Body"].read()
        except (ClientError, BotoCoreError):
            return None

    originals = live_shards(lc, bucket, "o")
    lie_in(lc, bucket, "o", {0: {0}, 1: {1}, 2: {2, 3}})
    for _ in range(3):  # the first read names liars; later reads must not depend on luck
        assert get() == body
    assert get(f"bytes={2 * MiB}-") == body[2 * MiB:]
    deadline = time.monotonic() + 45
    while live_shards(lc, bucket, "o") != originals:
        assert time.monotonic() < deadline, "repair did not restore all-honest shards"
        assert get() == body
        time.sleep(0.2)
    assert get() == body


# Seeded fault injection: shards that lie in other ways than random blocks ---------------------

def _frames(raw: bytes) -> tuple[ShardHeader, list[bytes]]:
    header = ShardHeader.unpack(raw[:HEADER_BYTES])
    off, blocks = HEADER_BYTES, []
    while off + FRAME_HEAD_BYTES <= len(raw):
        length, _ = FRAME_HEAD.unpack_from(raw, off)
        blocks.append(raw[off + FRAME_HEAD_BYTES:off + FRAME_HEAD_BYTES + length])
        off += FRAME_HEAD_BYTES + length
    return header, blocks


def _framed(header: ShardHeader, blocks: list[bytes]) -> bytes:
    """A shard file with valid header and frame checksums around whatever blocks."""
    return header.pack() + b"".join(pack_frame(header, i, b) for i, b in enumerate(blocks))


FORGERIES: dict[str, Callable[[bytes, bytes, bytes, random.Random], bytes]] = {
    # (own shard file, the same index of another object of the same size, the next index of
    # this stripe, rng) -> the file the node will now serve
    "other-object": lambda own, donor, sib, rnd: donor,
    "other-object-reframed": lambda own, donor, sib, rnd: _framed(
        _frames(own)[0], _frames(donor)[1]),
    "sibling-reframed": lambda own, donor, sib, rnd: _framed(_frames(own)[0], _frames(sib)[1]),
    "segments-rotated": lambda own, donor, sib, rnd: _framed(
        _frames(own)[0], _frames(own)[1][1:-1] + _frames(own)[1][:1] + _frames(own)[1][-1:]
        if len(_frames(own)[1]) > 2 else [bytes(len(b)) for b in _frames(own)[1]]),
    "zeros": lambda own, donor, sib, rnd: _framed(
        _frames(own)[0], [bytes(len(b)) for b in _frames(own)[1]]),
    "last-frame-dropped": lambda own, donor, sib, rnd: _framed(
        _frames(own)[0], _frames(own)[1][:-1]),
    "cut-mid-frame": lambda own, donor, sib, rnd: own[:len(own) - 1 - rnd.randrange(
        max(1, len(_frames(own)[1][-1])))],
    "header-only": lambda own, donor, sib, rnd: own[:HEADER_BYTES],
    "empty": lambda own, donor, sib, rnd: b"",
}


def _forge(c: LocalCluster, part: Any, donor: Any, index: int, kind: str,
           rnd: random.Random) -> None:
    def path(p: Any, i: int) -> Any:  # its file, or its packed record (tests.held_shards)
        return c.shard(str(p.nodes[i]), shard_id(p.stripe_id, i))

    target = path(part, index)
    sib = (index + 1) % len(part.nodes)
    sib_raw = path(part, sib).read_bytes() if part.nodes[sib] else target.read_bytes()
    raw = FORGERIES[kind](target.read_bytes(), path(donor, index).read_bytes(), sib_raw, rnd)
    target.write_bytes(raw)  # a file replaced whole; a record in place, or by a file


@pytest.mark.parametrize("seed", [1, 2])
def test_forged_shards_never_cost_or_change_the_object(lc: LocalCluster, seed: int) -> None:
    """Shards a node serves in place of its own: another object's (as is, or reframed under
    this stripe's header so every frame checksum holds), a sibling's blocks relabelled as
    this index, its own segments rotated, zeros, truncated at a frame or mid-frame, only a
    header, empty. Up to m forged shards (fewer when the PUT was acknowledged without one)
    must cost nothing: the whole object and ranges of it read exactly; m + 1 may cost the
    read but never give other bytes. Sizes cover the batched small-stripe path and
    streamed multi-segment ones; placements are random."""
    s3 = lc.client()
    bucket = f"forged-{seed}"
    s3.create_bucket(Bucket=bucket)
    rnd = random.Random(seed)
    for trial in range(8):
        size = rnd.choice([4097, 70_000, MiB + 3 * 4096 + 1, SIZE])
        body, other = rnd.randbytes(size), rnd.randbytes(size)
        s3.put_object(Bucket=bucket, Key=f"t{trial}", Body=body)
        s3.put_object(Bucket=bucket, Key=f"d{trial}", Body=other)
        part = lc.manifest(bucket, f"t{trial}").parts[0]
        donor = lc.manifest(bucket, f"d{trial}").parts[0]
        placed = [i for i, n in enumerate(part.nodes) if n and donor.nodes[i]]
        spare = 2 - (len(part.nodes) - sum(1 for n in part.nodes if n))
        extra = trial % 4 == 3  # one past m: an error is allowed, other bytes never
        chosen = rnd.sample(placed, min(len(placed), spare + int(extra)))
        kinds = [rnd.choice(sorted(FORGERIES)) for _ in chosen]
        for index, kind in zip(chosen, kinds, strict=True):
            _forge(lc, part, donor, index, kind, rnd)
        start = rnd.randrange(size)
        for rng, want in ((None, body), (f"bytes={start}-", body[start:]),
                          (f"bytes=-{size - start}", body[start:])):
            got = read(s3, bucket, f"t{trial}", rng)
            what = f"trial {trial} size {size} forged {list(zip(chosen, kinds, strict=True))} range {rng}"
            assert got is None or got == want, f"{what}: other bytes returned"
            assert got is not None or extra, f"{what}: the read failed with <= m forged"
