"""An upload aborted while its worker thread still writes (a cancelled task cannot stop the
thread): the discard waits for the write, so its descriptor is never closed under it (a
reused descriptor would take the bytes into another file) and the temp file is not made
again after its unlink (review9a)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from nodes.disk import DiskShardStore
from tests.contract.node_harness import make_shard


class _HeldDigest:
    """A body digest whose update blocks until released: a write parked mid-way."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def update(self, _data: object) -> None:
        self.entered.set()
        self.go.wait(30)

    def digest(self) -> bytes:
        return b""


async def _held_writer(tmp_path: Path) -> tuple[DiskShardStore, str, bytes, Any, _HeldDigest]:
    """A store, a shard's id and body, its upload's writer, and the digest that parks it."""
    store = DiskShardStore(tmp_path / "node")
    await store.start()
    sid, _, _, body = make_shard(frames=2, block_size=4096, last=100)
    writer = await store.begin_put(sid)
    held = _HeldDigest()
    writer.digest = held
    return store, sid, body, writer, held


@pytest.mark.parametrize("aligned", [True, False])
async def test_an_abort_waits_for_the_write_in_flight(tmp_path: Path, aligned: bool) -> None:
    store, sid, body, writer, held = await _held_writer(tmp_path)
    views = [memoryview(body)]
    call = writer.write_aligned_sync if aligned else writer._write_many_sync
    errors: list[BaseException] = []

    def write() -> None:
        try:
            call(views)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    t = threading.Thread(target=write)
    t.start()
    assert await asyncio.to_thread(held.entered.wait, 30)
    abort = asyncio.ensure_future(writer.abort())
    await asyncio.sleep(0.05)  # the abort may not finish while the write holds the file
    assert not abort.done()
    held.go.set()
    await abort
    await asyncio.to_thread(t.join, 30)
    assert not errors
    assert not os.path.exists(writer.tmp_path)  # not made again by the write after the unlink
    assert not os.path.exists(store.shard_path(sid))
    with pytest.raises(RuntimeError):
        writer.write_aligned_sync(views)  # a later write is refused, makes no file
    assert not os.path.exists(writer.tmp_path)


async def test_a_cancelled_abort_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """Cancelled while the write is still in flight, the abort leaves the discard to its
    thread: the event loop does not wait on the write (review9c)."""
    store, sid, body, writer, held = await _held_writer(tmp_path)
    t = threading.Thread(target=writer.write_aligned_sync, args=([memoryview(body)],))
    t.start()
    assert await asyncio.to_thread(held.entered.wait, 30)
    safety = threading.Timer(10, held.go.set)  # the old code blocks the loop until this
    safety.start()
    try:
        abort = asyncio.ensure_future(writer.abort())
        await asyncio.sleep(0)  # the abort is under way: its discard waits for the write
        abort.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abort
        assert not held.go.is_set()  # the loop came back while the write was still held
    finally:
        held.go.set()
        safety.cancel()
    await asyncio.to_thread(t.join, 30)
    for _ in range(3000):  # the discard finishes in its thread
        if not os.path.exists(writer.tmp_path):
            break
        await asyncio.sleep(0.01)
    assert not os.path.exists(writer.tmp_path)
