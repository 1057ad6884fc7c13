"""Shared by the shard fetcher's tests (tests/unit/test_fetch_node_checks.py,
tests/contract/test_shard_fetch.py): a buffer pool that counts what is out, and an event set
when a fetch connection records a failed frame."""

from __future__ import annotations

import asyncio

import pytest

from storage.buffers import BufferPool
from storage.shards import fetch


class CountingPool(BufferPool):
    """A pool whose `out` counts the buffers taken and not yet given back."""

    def __init__(self) -> None:
        super().__init__(1 << 30)
        self.out = 0

    def take(self, size: int) -> bytearray:
        self.out += 1
        return super().take(size)

    def give(self, buf: bytearray) -> None:
        self.out -= 1
        super().give(buf)


def frame_failures(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set once a fetch connection records an error (a frame failed its check),
    whether or not the reader pulled that frame."""
    failed = asyncio.Event()
    real_fail = fetch._Conn._fail

    def spy(self: fetch._Conn, exc: BaseException) -> None:
        real_fail(self, exc)
        failed.set()

    monkeypatch.setattr(fetch._Conn, "_fail", spy)
    return failed
