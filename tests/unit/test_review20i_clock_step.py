"""review20i: mend20d's start rule keeps a shard file whose mtime is after its packed
record's time, and tombstones the packed copy. A file revived by a power cut (its unlink
lost) that was written while the node clock ran ahead (an RTC off at boot, a VM restored,
then NTP stepped back) has such an mtime: the newer packed copy is then destroyed and the
revived, stale bytes served. Here the clock step is modelled by the file's mtime."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.unit.test_packed_node import PACK_MAX, Node
from tests.unit.test_revived_shard_file import _file_beside_packed


async def test_a_revived_file_from_a_clock_ahead_never_beats_the_packed_copy(
        tmp_path: Path) -> None:
    data, sid, body, path = await _file_beside_packed(tmp_path)
    ahead = time.time_ns() + 3600 * 10**9  # written while the clock was an hour ahead
    os.utime(path, ns=(ahead, ahead))
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        got = await on.call("GET", f"/v1/shards/{sid}?first=0&count=2")
        packed = on.store.packs is not None and sid in on.store.packs.index
        print("file kept:", path.exists(), "packed copy still indexed:", packed,
              "serves the packed (newer) bytes:", got == (200, body))
        assert got == (200, body)
    finally:
        await on.stop()
