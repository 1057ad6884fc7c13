"""Erasure coding: k data blocks + m parity blocks; any k rebuild the input.

One code, two implementations. The code is zfec's: systematic Reed-Solomon over GF(2^8)
(polynomial 0x11d) whose parity rows come from zfec's Vandermonde-derived generator matrix,
so data blocks are the input itself. ISA-L (`storage.isal`, bundled in pyeclib's wheel)
computes the same blocks byte for byte from that matrix about 30x cheaper; zfec is used when
ISA-L is not installed. Blocks written by either are read, checked and repaired by the
other: the shard header's codec id (0) names the code, not the library.

Pure and synchronous. Both release the GIL, so callers run them in a thread pool.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Mapping

import zfec

from storage.isal import IsaL, load

BACKENDS = ("auto", "isal", "zfec")


def block_size(length: int, k: int) -> int:
    """Bytes per shard block for an input of `length` bytes (zero-padded to a multiple of k)."""
    return max(1, -(-length // k))


@functools.cache
def generator(k: int, m: int) -> bytes:
    """The m x k parity coefficients of zfec's code (row r makes block k + r).

    Read off zfec itself: coding one-byte unit vectors yields the matrix's columns.
    """
    enc = zfec.Encoder(k, k + m)
    rows = bytearray(m * k)
    for j in range(k):
        parity = enc.encode([b"\x01" if i == j else b"\x00" for i in range(k)],
                            list(range(k, k + m)))
        for r in range(m):
            rows[r * k + j] = parity[r][0]
    return bytes(rows)


def _row(k: int, m: int, index: int) -> bytes:
    """Row `index` of the full (k+m) x k generator: a unit row for data blocks."""
    if index < k:
        return bytes(1 if j == index else 0 for j in range(k))
    r = index - k
    return generator(k, m)[r * k:(r + 1) * k]


class ErasureCodec:
    """Encodes one sealed segment into k+m equal blocks and back."""

    def __init__(self, k: int, m: int, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown erasure backend {backend!r}")
        self.k = k
        self.m = m
        self._isal: IsaL | None = None if backend == "zfec" else load()
        if backend == "isal" and self._isal is None:
            raise RuntimeError("ISA-L is not installed (pip install pyeclib)")
        self._enc = zfec.Encoder(k, k + m)
        self._dec = zfec.Decoder(k, k + m)
        self._parity = list(range(k, k + m))
        if self._isal is not None:
            self._tables = _encode_tables(self._isal, k, m)

    @property
    def backend(self) -> str:
        """Which implementation codes ("isal" or "zfec"); the blocks are the same."""
        return "isal" if self._isal is not None else "zfec"

    def encode(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        """The k+m blocks of `data`: the k data blocks are views of `data` (of a padded
        copy when its length is not a multiple of k), so no byte is copied for them."""
        b = block_size(len(data), self.k)
        padded = data if len(data) == b * self.k else bytes(data) + bytes(b * self.k - len(data))
        view = memoryview(padded)
        primary: list[bytes | memoryview] = [view[i * b:(i + 1) * b] for i in range(self.k)]
        if self._isal is None:
            return [*primary, *self._enc.encode(primary, self._parity)]
        parity = [bytearray(b) for _ in range(self.m)]
        self._isal.apply(self._tables, self.k, b, [(padded, i * b) for i in range(self.k)],
                         parity)
        return [*primary, *(memoryview(p) for p in parity)]

    def decode(self, blocks: Mapping[int, bytes], length: int) -> bytes:
        """Rebuild the `length`-byte input from any k blocks (index -> block)."""
        if len(blocks) < self.k:
            raise ValueError(f"need {self.k} blocks, got {len(blocks)}")
        chosen = sorted(blocks)[: self.k]
        if chosen == list(range(self.k)):
            out = b"".join(blocks[i] for i in chosen)
        elif self._isal is None:
            out = b"".join(self._dec.decode([blocks[i] for i in chosen], chosen))
        else:
            out = self._isal_decode(blocks, chosen)
        return out if len(out) == length else out[:length]

    def _isal_decode(self, blocks: Mapping[int, bytes], chosen: list[int]) -> bytes:
        b = len(blocks[chosen[0]])
        if any(len(blocks[i]) != b for i in chosen):
            raise ValueError("blocks of one segment differ in length")
        assert self._isal is not None
        missing, tables = _decode_tables(self._isal, self.k, self.m, tuple(chosen))
        rebuilt = [bytearray(b) for _ in missing]
        self._isal.apply(tables, self.k, b, [(blocks[i], 0) for i in chosen], rebuilt)
        made = dict(zip(missing, rebuilt, strict=True))
        return b"".join(made[i] if i in made else blocks[i] for i in range(self.k))

    def rebuild(self, blocks: Mapping[int, bytes], length: int,
                wanted: list[int]) -> dict[int, bytes | memoryview]:
        """Recompute the blocks at `wanted` indexes from any k others (used by repair)."""
        data = self.decode(blocks, length)
        full = self.encode(data)
        return {i: full[i] for i in wanted}


@functools.cache
def _encode_tables(isal: IsaL, k: int, m: int) -> ctypes.Array[ctypes.c_char]:
    return isal.tables(k, m, generator(k, m))


@functools.cache
def _decode_tables(isal: IsaL, k: int, m: int, chosen: tuple[int, ...],
                   ) -> tuple[list[int], ctypes.Array[ctypes.c_char]]:
    """For blocks `chosen` (k indexes): the data indexes they lack and the tables that make
    them (rows of the inverse of the chosen rows of the generator)."""
    inverse = isal.invert(b"".join(_row(k, m, i) for i in chosen), k)
    missing = [i for i in range(k) if i not in chosen]
    rows = b"".join(inverse[i * k:(i + 1) * k] for i in missing)
    return missing, isal.tables(k, len(missing), rows)
