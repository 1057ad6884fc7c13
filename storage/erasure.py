"""Erasure coding with zfec: k data blocks + m parity blocks; any k rebuild the input.

Pure and synchronous. zfec releases the GIL, so callers run it in a thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping

import zfec


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
