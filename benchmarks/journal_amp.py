"""Block journal write amplification: bytes stored per byte written, load-independent.

    python benchmarks/journal_amp.py [seq|rand|wide ...]

The real volume service, journal and overlay over simulated nodes (tests/unit's Sim); counts
the bytes handed to the stripe writer (segments and extents): 16 MiB written sequentially in
1 MiB writes with a barrier every 4 MiB, then detach; 4,096 random 4 KiB pages over
16 MiB with a barrier every 512, then detach; and ("wide") 24,576 random pages over 16 MiB
through a 4 MiB overlay and an 8 MiB clean-extent cache (folds at work), a barrier every 256; and ("hot") 40,960 writes to
512 pages across 64 extents through a 32 MiB overlay (the journal outgrows twice the bound
while the overlay stays small). Prints folds and CPU.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.volume_overlay import JournaledVolume  # noqa: E402
from tests.unit.test_volume_journal import Sim  # noqa: E402

MiB = 1 << 20


async def run(tmp: Path, kind: str) -> None:
    sim = Sim(tmp)
    svc = await sim.open()
    await svc.create("t", "v", 64 * MiB)
    h = await svc.open("t", "v", holder="bench")
    stored = [0]
    orig = svc.stripes.write

    async def counting(codec: Any, prof: Any, src: Any, size_hint: int = 0, **kw: Any) -> Any:
        stored[0] += size_hint
        return await orig(codec, prof, src, size_hint=size_hint, **kw)
    svc.stripes.write = counting  # type: ignore[method-assign]
    reads = [0]
    read_extent = h.read_extent

    async def counting_read(idx: int) -> bytes | None:
        reads[0] += 1
        return await read_extent(idx)
    h.read_extent = counting_read  # type: ignore[method-assign]
    # "wide": random pages over four times the overlay's bound, the shape of fio's random
    # writes over a file larger than the overlay (folds and compactions at work meanwhile)
    jv = JournaledVolume(h, max_dirty={"wide": 4, "hot": 32}.get(kind, 128) * MiB,
                         max_clean={"wide": 8}.get(kind, 128) * MiB)
    jv.start()
    rnd = random.Random(1)
    t0, written = time.process_time(), 0
    if kind == "seq":
        for i in range(16):
            await jv.write(i * MiB + 3 * 4096, rnd.randbytes(MiB))
            written += MiB
            if i % 4 == 3:
                await jv.flush()
    elif kind == "hot":  # 8 pages in each of 64 extents rewritten: the journal outgrows
        hot = [e * MiB + p * 4096 for e in range(64) for p in range(0, 256, 32)]  # the bound
        for i in range(40960):
            off, page = rnd.choice(hot), rnd.randbytes(4096)
            if jv.try_write(off, page) is None:
                await jv.write(off, page)
            written += 4096
            if i % 256 == 255:
                await jv.flush()
    elif kind == "wide":
        for i in range(24576):
            page = rnd.randbytes(4096)
            off = rnd.randrange(16 * 256) * 4096
            if jv.try_write(off, page) is None:
                await jv.write(off, page)
            written += 4096
            if i % 256 == 255:
                await jv.flush()
    else:
        for i in range(4096):
            await jv.write(rnd.randrange(16 * 256) * 4096, rnd.randbytes(4096))
            written += 4096
            if i % 512 == 511:
                await jv.flush()
    await jv.flush()
    at_barriers = stored[0]
    await jv.stop()
    await h.close()
    print(f"{kind}: written {written / MiB:.0f} MiB, stored by the barriers "
          f"{at_barriers / MiB:.1f} MiB, after detach {stored[0] / MiB:.1f} MiB "
          f"({stored[0] / written:.2f}x), {jv.folds} folds, {reads[0]} extent reads, CPU {time.process_time() - t0:.1f} s")
    await sim.close()


def main() -> None:
    for kind in sys.argv[1:] or ("seq", "rand", "wide"):
        with tempfile.TemporaryDirectory() as d:
            asyncio.run(run(Path(d), kind))


if __name__ == "__main__":
    main()
