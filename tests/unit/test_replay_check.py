"""The byte model a crash-replay test checks a volume against: after a crash, each byte holds
its value at the last barrier or the value of a write made after it (a block device promises
nothing more for unsynced writes). Checked with whole-volume masks, not byte by byte: the
per-byte loop was most of the replay test's time."""

from __future__ import annotations

import pytest

_EQUAL = bytes([1]) + bytes(255)  # XOR byte 0 (the same byte) -> 1, any other -> 0


def _same(a: bytes, b: bytes) -> int:
    """1 where `a` and `b` hold the same byte, else 0, one byte per position as a big-endian
    int: masks of the whole volume combine with `|` and shifts at C speed, not per byte."""
    x = (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
    return int.from_bytes(x.translate(_EQUAL), "big")


def check_replay(got: bytes, synced: bytearray, since: list[tuple[int, bytes]]) -> None:
    """Each byte holds its value at the last barrier or one written after it."""
    n = len(got)
    ok = _same(got, synced)
    for o, d in since:
        end = min(o + len(d), n)
        ok |= _same(got[o:end], d[:end - o]) << (8 * (n - end))
    if ok != int.from_bytes(b"\x01" * n, "big"):
        i = ok.to_bytes(n, "big").index(0)
        raise AssertionError(f"byte {i}: {got[i]} is neither the synced value {synced[i]} "
                             "nor a later write")


def test_check_accepts_synced_or_later_written_bytes_only() -> None:
    synced, got = bytearray(b"a" * 8192), bytearray(b"a" * 8192)
    got[3], got[5000:5003], got[8191] = ord("b"), b"xyz", ord("c")
    check_replay(bytes(got), synced, [(4999, b"qxyz"), (0, b"b" * 10), (8190, b"cc")])
    for since, bad in (([(4999, b"qxYz"), (0, b"b" * 10), (8190, b"cc")], 5001),
                       ([(4999, b"qxyz"), (8190, b"cc")], 3), ([(4999, b"qxyz"), (0, b"b")], 3)):
        with pytest.raises(AssertionError, match=f"byte {bad}:"):
            check_replay(bytes(got), synced, since)
