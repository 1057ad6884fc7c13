"""Erasure coding with zfec: k data blocks + m parity blocks; any k rebuild the input.

Pure and synchronous. zfec releases the GIL, so callers run it in a thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import zfec

Block = bytes | memoryview


def same(a: Block, b: Block) -> bool:
    """Byte equality at memcmp speed: `memoryview == bytes` compares item by item in
    Python's struct machinery, about a hundred times slower than a copy and a memcmp."""
    return (a if isinstance(a, bytes) else bytes(a)) == (b if isinstance(b, bytes) else bytes(b))


def block_size(length: int, k: int) -> int:
    """Bytes per shard block for an input of `length` bytes (zero-padded to a multiple of k)."""
    return max(1, -(-length // k))


class ErasureCodec:
    """Encodes one sealed segment into k+m equal blocks and back."""

    def __init__(self, k: int, m: int) -> None:
        self.k = k
        self.m = m
        self._enc = zfec.Encoder(k, k + m)
        self._dec = zfec.Decoder(k, k + m)
        self._parity = list(range(k, k + m))

    def encode(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        """The k+m blocks of `data`: the k data blocks are views of `data` (of a padded
        copy when its length is not a multiple of k), so no byte is copied for them."""
        b = block_size(len(data), self.k)
        padded = data if len(data) == b * self.k else bytes(data) + bytes(b * self.k - len(data))
        view = memoryview(padded)
        primary = [view[i * b:(i + 1) * b] for i in range(self.k)]
        parity = self._enc.encode(primary, self._parity)
        return [*primary, *parity]

    def decode(self, blocks: Mapping[int, bytes], length: int) -> bytes:
        """Rebuild the `length`-byte input from any k blocks (index -> block)."""
        if len(blocks) < self.k:
            raise ValueError(f"need {self.k} blocks, got {len(blocks)}")
        chosen = sorted(blocks)[: self.k]
        if chosen == list(range(self.k)):
            out = b"".join(blocks[i] for i in chosen)
        else:
            out = b"".join(self._dec.decode([blocks[i] for i in chosen], chosen))
        return out if len(out) == length else out[:length]

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
        only what is needed: the k lowest blocks give the primary (data) blocks (a zfec
        decode only when one of them is parity), and one encode pass yields just the
        parity rows asked for plus those of the blocks beyond k, which are checked. The
        zero padding of the last data blocks is checked too, as a re-encode would (all of
        `blocks` are named when it is not zero). Blocks of the wrong size disagree.
        ValueError when fewer than k blocks are given.
        """
        k = self.k
        if len(blocks) < k:
            raise ValueError(f"need {k} blocks, got {len(blocks)}")
        b = block_size(length, k)
        wrong = sorted(i for i, blk in blocks.items() if len(blk) != b)
        if wrong:
            return {}, wrong
        chosen = sorted(blocks)[:k]
        if chosen == list(range(k)):
            primary: list[Block] = [blocks[i] for i in chosen]
        else:
            primary = self._dec.decode(tuple(blocks[i] for i in chosen), tuple(chosen))
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
        parity = dict(zip(rows, self._enc.encode(tuple(primary), rows), strict=True)) \
            if rows else {}

        def block(i: int) -> Block:
            return primary[i] if i < k else parity[i]

        wrong = [i for i in extra if not same(block(i), blocks[i])]
        return {i: block(i) for i in wanted}, wrong
