"""The node scrubber over a real on-disk shard store: finds bit rot, quarantines, paces."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from nodes.disk import DiskShardStore
from nodes.scrubber import SHARD_FLOOR_BYTES, Scrubber
from storage.config import PackSettings, ScrubSettings, env_settings
from storage.shards.format import ShardHeader, pack_frame
from storage.shards.ids import shard_id


async def _write(store: DiskShardStore, stripe: bytes, index: int, frames: int) -> str:
    h = ShardHeader(k=4, m=2, index=index, segment_size=4096, block_size=1028,
                    stripe_id=stripe)
    rnd = random.Random(index)
    body = h.pack() + b"".join(pack_frame(h, s, rnd.randbytes(1028)) for s in range(frames))
    sid = shard_id(stripe, index)
    w = await store.begin_put(sid)
    await w.write(body)
    await w.commit()
    return sid


async def test_scrub_pass_quarantines_only_the_damaged_shard(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    await store.start()
    stripe = bytes(range(16))
    sids = [await _write(store, stripe, i, 3) for i in range(4)]
    victim = store.path_of(sids[2])
    raw = bytearray(victim.read_bytes())
    raw[44 + 8 + 1028 + 8 + 5] ^= 0x01  # a bit inside the second frame's block
    victim.write_bytes(bytes(raw))
    reported: list[str] = []
    s = Scrubber(store, ScrubSettings(rate_bytes_s=50 * 2**20, pause_s=0),
                 on_corrupt=lambda sid, reason: reported.append(sid))
    await s.run_pass()
    assert reported == [sids[2]]
    assert s.progress.corrupt_found == 1 and s.progress.passes == 1
    assert sorted(await store.list()) == sorted(sids[:2] + sids[3:])
    q = await store.quarantined()
    assert [e["shard_id"] for e in q] == [sids[2]]
    await s.run_pass()  # a clean second pass
    assert s.progress.corrupt_found == 1 and s.progress.shards_this_pass == 3


async def test_small_shards_are_paced_by_count_not_only_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shard costs at least SHARD_FLOOR_BYTES of the rate: 8 one-frame shards (~1 KiB)
    at 64 KiB/s are 8 s of pacing, not 0.14 s (nothing waits: the sleeps are recorded)."""
    store = DiskShardStore(tmp_path)
    await store.start()
    sids = [await _write(store, bytes([i]) * 16, 0, 1) for i in range(8)]
    rate = 64 * 1024
    s = Scrubber(store, ScrubSettings(rate_bytes_s=rate, pause_s=0))
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(s, "_sleep", sleep)
    t = time.monotonic()
    await s.run_pass()
    took = time.monotonic() - t
    assert s.progress.shards_this_pass == len(sids)
    assert s.progress.bytes_this_pass < len(sids) * 2048  # the bytes are few...
    assert max(asked) >= len(sids) * SHARD_FLOOR_BYTES / rate - took  # ...the shards are not


def test_settings_from_defaults_and_env() -> None:
    assert env_settings("scrub", {}) == ScrubSettings()
    env = {"TESSERA_SCRUB_RATE_MBPS": "0", "TESSERA_SCRUB_PAUSE_S": "5"}
    s = env_settings("scrub", env)
    assert s.rate_bytes_s == 0 and s.pause_s == 5


async def test_scrub_pass_finds_rot_in_a_packed_shard(tmp_path: Path) -> None:
    """Packed shards (issue 17) are listed, verified and quarantined by the same pass: the
    rotten record set aside (copied, tombstoned), the pack's other shards kept."""
    store = DiskShardStore(tmp_path, packs=PackSettings(max_shard_bytes=1 << 20, reserve_bytes=0))
    await store.start()
    try:
        stripe = bytes(range(16))
        sids = []
        for i in range(4):
            h = ShardHeader(k=4, m=2, index=i, segment_size=4096, block_size=1028,
                            stripe_id=stripe)
            rnd = random.Random(i)
            body = h.pack() + b"".join(pack_frame(h, s, rnd.randbytes(1028)) for s in range(3))
            sid = shard_id(stripe, i)
            w = await store.begin_put(sid)
            await w.commit([body])  # whole: packed
            sids.append(sid)
        assert not store.path_of(sids[0]).exists()
        where = store.locate(sids[2])
        with open(where.path, "r+b") as f:
            f.seek(where.base + 44 + 8 + 1028 + 8 + 5)
            b = f.read(1)
            f.seek(where.base + 44 + 8 + 1028 + 8 + 5)
            f.write(bytes([b[0] ^ 0x01]))
        reported: list[str] = []
        s = Scrubber(store, ScrubSettings(rate_bytes_s=50 * 2**20, pause_s=0),
                     on_corrupt=lambda sid, reason: reported.append(sid))
        await s.run_pass()
        assert reported == [sids[2]]
        assert sorted(await store.list()) == sorted(sids[:2] + sids[3:])
        assert [e["shard_id"] for e in await store.quarantined()] == [sids[2]]
        await s.run_pass()
        assert s.progress.corrupt_found == 1 and s.progress.shards_this_pass == 3
    finally:
        await store.close()
