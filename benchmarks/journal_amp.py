"""Block journal write amplification: bytes stored per byte written, load-independent.

    python benchmarks/journal_amp.py

The real volume service, journal and overlay over simulated nodes (tests/unit's Sim); counts
the bytes handed to the stripe writer (segments and extents): 16 MiB written sequentially in
1 MiB writes with a barrier every 4 MiB, then detach; and 4,096 random 4 KiB pages over
16 MiB with a barrier every 512, then detach. Prints process CPU beside each.
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
    jv = JournaledVolume(h)
    jv.start()
    rnd = random.Random(1)
    t0, written = time.process_time(), 0
    if kind == "seq":
        for i in range(16):
            await jv.write(i * MiB + 3 * 4096, rnd.randbytes(MiB))
            written += MiB
            if i % 4 == 3:
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
          f"({stored[0] / written:.2f}x), CPU {time.process_time() - t0:.1f} s")
    await sim.close()


def main() -> None:
    for kind in ("seq", "rand"):
        with tempfile.TemporaryDirectory() as d:
            asyncio.run(run(Path(d), kind))


if __name__ == "__main__":
    main()
