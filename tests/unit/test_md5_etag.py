"""storage.crypto.md5 (the ETag's MD5, from cryptography's OpenSSL) gives hashlib's digests."""

from __future__ import annotations

import hashlib
import mmap

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.buffers import Lent
from storage.crypto.md5 import md5

KINDS = ("bytes", "bytearray", "view", "lent", "mmap")


def _as(kind: str, data: bytes) -> bytes | bytearray | memoryview | mmap.mmap:
    """`data` as one of the buffer types a body's pieces come in."""
    if kind == "bytearray":
        return bytearray(data)
    if kind == "view":
        return memoryview(b"\0" + data)[1:]
    if kind == "lent":
        return Lent(data)
    if kind == "mmap" and data:
        m = mmap.mmap(-1, len(data))
        m[:] = data
        return m
    return data


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=3000), st.sampled_from(KINDS)), max_size=8),
       st.integers(min_value=0, max_value=8))
def test_same_digest_as_hashlib_piece_by_piece(pieces: list[tuple[bytes, str]],
                                               cut: int) -> None:
    """Fed the same pieces in any buffer type, digest/hexdigest/copy agree with hashlib's,
    and asking for the digest midway changes nothing that follows."""
    ours, ref = md5(), hashlib.md5()
    for i, (data, kind) in enumerate(pieces):
        if i == cut:
            assert ours.digest() == ref.digest()
            fork, ref_fork = ours.copy(), ref.copy()
            fork.update(b"fork")
            ref_fork.update(b"fork")
            assert fork.hexdigest() == ref_fork.hexdigest()
        ours.update(_as(kind, data))
        ref.update(data)
    assert ours.hexdigest() == ref.hexdigest()
    assert ours.digest() == ref.digest()  # twice: the digest does not end the hash


def test_whole_body_and_large_buffers() -> None:
    """One-shot use as the Content-MD5 check does it, and multi-megabyte pieces."""
    assert md5(b"abc").hexdigest() == "900150983cd24fb0d6963f7d28e17f72"
    assert md5().hexdigest() == hashlib.md5().hexdigest()
    big = bytes(range(256)) * 16384  # 4 MiB, a large segment
    ours = md5()
    for _ in range(3):
        ours.update(memoryview(big))
    assert ours.hexdigest() == hashlib.md5(big * 3).hexdigest()
