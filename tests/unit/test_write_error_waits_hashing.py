"""A stripe write that fails gives its upload budget back only once its hashing threads
ended: a digest thread still feeding holds its segment (review15c finding 5, mend15c)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec
from storage.pipeline import StripeCodec
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, wired_cluster

SEG = 64 * 1024


class _SlowDigest:
    """A digest whose first update holds its thread until `release` (a segment held)."""

    def __init__(self) -> None:
        self.entered, self.release, self.left = (threading.Event(), threading.Event(),
                                                 threading.Event())

    def update(self, piece: object) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
            self.left.set()


async def test_a_failed_write_waits_for_its_hashing_thread(tmp_path: Path) -> None:
    cfg = replace(sim_config(tmp_path, 1024), segment_size=SEG, large_segment_size=SEG)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as cluster:
        stripes = cluster.stripes
        digest = _SlowDigest()
        codec = StripeCodec(cipher=SegmentCipher(os.urandom(32)), codec=ErasureCodec(4, 2),
                            identity="o", part=1, stripe_id=os.urandom(16),
                            segment_size=SEG)

        async def source() -> AsyncIterator[bytes]:
            yield os.urandom(2 * SEG + 1)
            await asyncio.to_thread(digest.entered.wait, 30)  # a hashing thread holds one
            # let it go a while after the write failed: the write must wait for it
            threading.Timer(1.0, digest.release.set).start()
            raise OSError("the client went away")

        with pytest.raises(OSError, match="went away"):
            await stripes.write(codec, cfg.profile(), source(), [digest])
        assert digest.left.is_set()  # the old code returned with the thread still feeding
        assert stripes.uploads.in_use == 0
