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
from collections.abc import Mapping, Sequence

import zfec

from storage.isal import IsaL, load

BACKENDS = ("auto", "isal", "zfec")
Block = bytes | bytearray | memoryview


def same(a: Block, b: Block) -> bool:
    """Byte equality at memcmp speed: `memoryview == bytes` compares item by item in
    Python's struct machinery, about a hundred times slower than a copy and a memcmp."""
    return (a if isinstance(a, bytes) else bytes(a)) == (b if isinstance(b, bytes) else bytes(b))


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

    def parity_into(self, data: bytearray, offsets: Sequence[int], b: int,
                    outputs: Sequence[memoryview]) -> None:
        """Write the m parity blocks of the k `b`-byte data blocks found at `offsets` of
        `data` into `outputs` (writable, `b` bytes each): `encode` for a caller that lays
        its blocks out itself (the frames of one segment, in one buffer)."""
        if self._isal is not None:
            self._isal.apply(self._tables, self.k, b, [(data, o) for o in offsets], outputs)
            return
        view = memoryview(data)
        primary = [view[o:o + b] for o in offsets]
        for out, block in zip(outputs, self._enc.encode(primary, self._parity), strict=True):
            out[:] = block

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

    def disagreeing(self, data: Block, blocks: Mapping[int, Block]) -> list[int]:
        """The indexes of `blocks` that differ from the encoding of `data`."""
        full = self.encode(data)
        return sorted(i for i, b in blocks.items() if not same(full[i], b))

    def repair(self, blocks: Mapping[int, Block], length: int,
               wanted: Sequence[int]) -> tuple[dict[int, Block], list[int]]:
        """The blocks at `wanted` indexes of the `length`-byte input that `blocks` (k or
        more, index -> block) encode, and the indexes of `blocks` that disagree with it.

        The same bytes as `encode(decode(blocks, length))` at those indexes, computing
        only what is needed: the k lowest blocks give the primary (data) blocks (decoded
        only when one of them is parity), and one coding pass yields just the parity rows
        asked for plus those of the blocks beyond k, which are checked. The zero padding of
        the last data blocks is checked too, as a re-encode would (all of `blocks` are
        named when it is not zero). Blocks of the wrong size disagree. ValueError when
        fewer than k blocks are given.
        """
        k = self.k
        if len(blocks) < k:
            raise ValueError(f"need {k} blocks, got {len(blocks)}")
        b = block_size(length, k)
        wrong = sorted(i for i, blk in blocks.items() if len(blk) != b)
        if wrong:
            return {}, wrong
        chosen = sorted(blocks)[:k]
        primary = self._primary(blocks, chosen, b)
        pad = b * k - length  # zeros the writer appended; they end the last data blocks
        j = k - 1
        while pad > 0:  # nonzero padding: no zero-padded input encodes to these blocks
            n = min(pad, b)
            if bytes(primary[j][b - n:]).count(0) != n:
                return {}, sorted(blocks)
            pad -= n
            j -= 1
        extra = [i for i in sorted(blocks) if i not in chosen]
        rows = tuple(sorted({i for i in (*wanted, *extra) if i >= k}))
        parity = dict(zip(rows, self._parity_rows(primary, rows, b), strict=True))

        def block(i: int) -> Block:
            return primary[i] if i < k else parity[i]

        wrong = [i for i in extra if not same(block(i), blocks[i])]
        return {i: block(i) for i in wanted}, wrong

    def _primary(self, blocks: Mapping[int, Block], chosen: list[int], b: int) -> list[Block]:
        """The k data blocks from the k `chosen` blocks (all `b` bytes long)."""
        k = self.k
        if chosen == list(range(k)):
            return [blocks[i] for i in chosen]
        if self._isal is None:
            return list(self._dec.decode(tuple(blocks[i] for i in chosen), tuple(chosen)))
        missing, tables = _decode_tables(self._isal, k, self.m, tuple(chosen))
        rebuilt = [bytearray(b) for _ in missing]
        self._isal.apply(tables, k, b, [(blocks[i], 0) for i in chosen], rebuilt)
        made = dict(zip(missing, rebuilt, strict=True))
        return [made[i] if i in made else blocks[i] for i in range(k)]

    def _parity_rows(self, primary: list[Block], rows: tuple[int, ...], b: int) -> list[Block]:
        """Only the parity blocks `rows` (indexes >= k) of the data blocks `primary`."""
        if not rows:
            return []
        if self._isal is None:
            return list(self._enc.encode(tuple(primary), rows))
        out = [bytearray(b) for _ in rows]
        self._isal.apply(_row_tables(self._isal, self.k, self.m, rows), self.k, b,
                         [(p, 0) for p in primary], out)
        return list(out)


@functools.cache
def _encode_tables(isal: IsaL, k: int, m: int) -> ctypes.Array[ctypes.c_char]:
    return isal.tables(k, m, generator(k, m))


@functools.cache
def _row_tables(isal: IsaL, k: int, m: int, rows: tuple[int, ...]) -> ctypes.Array[ctypes.c_char]:
    """Tables that make just the parity blocks `rows` from the k data blocks."""
    return isal.tables(k, len(rows), b"".join(_row(k, m, r) for r in rows))


@functools.cache
def _decode_tables(isal: IsaL, k: int, m: int, chosen: tuple[int, ...],
                   ) -> tuple[list[int], ctypes.Array[ctypes.c_char]]:
    """For blocks `chosen` (k indexes): the data indexes they lack and the tables that make
    them (rows of the inverse of the chosen rows of the generator)."""
    inverse = isal.invert(b"".join(_row(k, m, i) for i in chosen), k)
    missing = [i for i in range(k) if i not in chosen]
    rows = b"".join(inverse[i * k:(i + 1) * k] for i in missing)
    return missing, isal.tables(k, len(missing), rows)
