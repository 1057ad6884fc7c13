"""Opening a clone of a snapshot that holds a journal range is bounded.

The open used to read every held segment one after another and keep every unique page in
memory for as long as the handle lived (a clone of a snapshot taken under fio: 28 s and
306 MB in the daemon, the same inside the gateway for a flatten). Now `HELD_PARALLEL`
segments are read at once and the pages go to a local spill file: the handle keeps an index.
"""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

from storage import volume_held
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, with_service
from tests.unit.test_volume_snapshot_held import PAGE, detach, new_writer

PAGES = 512  # 2 MiB of unique pages held by the snapshot (of 3 MiB)


async def held_clone(svc: VolumeService) -> bytes:
    """v@s holds PAGES unique journal pages in many segments; c is its clone. Returns v@s."""
    w = await new_writer(svc, max_dirty=64 << 20)
    want = bytearray(SIZE)
    rnd = random.Random(7)
    for i, pg in enumerate(rnd.sample(range(SIZE // PAGE), PAGES)):
        data = rnd.randbytes(PAGE)
        await w.write(pg * PAGE, data)
        want[pg * PAGE:(pg + 1) * PAGE] = data
        if i % 16 == 15:
            await w.flush()  # one segment each
    await w.flush()
    await w.snapshot("s")
    await detach(w)
    await svc.clone("t", "v", "s", "c")
    return bytes(want)


def test_a_clone_open_keeps_an_index_not_the_held_pages() -> None:
    async def body(svc: VolumeService) -> None:
        want = await held_clone(svc)
        tracemalloc.start()
        try:
            h = await svc.open("t", "c", holder="c")
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        try:
            assert h.patches, "the snapshot holds no journal: the test proves nothing"
            assert held < PAGES * PAGE // 4, f"the open keeps {held} bytes"
            assert await h.read(0, SIZE) == want
        finally:
            await h.close()
    with_service(body)


def test_a_clone_open_reads_held_segments_concurrently_and_bounded(monkeypatch: Any) -> None:
    async def body(svc: VolumeService) -> None:
        want = await held_clone(svc)
        real = volume_held.read_entries
        now = most = calls = 0

        async def counted(*a: Any) -> Any:
            nonlocal now, most, calls
            now += 1
            calls += 1
            most = max(most, now)
            try:
                return await real(*a)
            finally:
                now -= 1
        monkeypatch.setattr(volume_held, "read_entries", counted)
        h = await svc.open("t", "c", holder="c")
        try:
            assert calls >= PAGES // 16
            assert 1 < most <= getattr(volume_held, "HELD_PARALLEL", 8), most
            assert await h.read(0, SIZE) == want
        finally:
            await h.close()
    with_service(body)
