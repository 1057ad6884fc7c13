"""The gateway lets its kept frame buffers go once its streaming writes are over
(`stripes.FRAME_TRIM` around `StripeStore.write`): they are for bursts of writes, and left
resident they push a following GET burst past the gateway's memory aim."""

from __future__ import annotations

import os
from pathlib import Path

from storage.crypto.aead import TAG_BYTES
from storage.erasure import block_size
from storage.shards.format import FRAME_HEAD_BYTES
from tests.integration.cluster import LocalCluster, wait_for

PAGE = os.sysconf("SC_PAGE_SIZE")
SEGMENT = 4 * 1024 * 1024  # large_segment_size: a PUT announced at 8 MiB or more


def _frame_set_kib(k: int = 4, width: int = 6) -> int:
    """A kept block's mapping size in smaps (kB): a 4 MiB segment's frames, as `_lay_out`."""
    size = (FRAME_HEAD_BYTES + block_size(SEGMENT + TAG_BYTES, k)) * width + TAG_BYTES
    return -(-size // PAGE) * PAGE // 1024


def _gateway_pids(data: Path) -> list[int]:
    top = int((data / "run" / "gateway.pid").read_text())
    kids = Path(f"/proc/{top}/task/{top}/children").read_text().split()
    return [top, *map(int, kids)]


def _kept_blocks(data: Path) -> int:
    """Anonymous mappings of exactly a kept frame block's size in the gateway's processes."""
    want = ["Size:", str(_frame_set_kib()), "kB"]
    count = 0
    for pid in _gateway_pids(data):
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
        for head, size in zip(lines, lines[1:], strict=False):
            fields = head.split()
            anonymous = len(fields) == 5 and "-" in fields[0] and len(fields[1]) == 4
            if anonymous and size.split() == want:
                count += 1
    return count


def test_kept_frame_buffers_are_let_go_after_the_writes(fresh_cluster: LocalCluster) -> None:
    s3 = fresh_cluster.client()
    s3.create_bucket(Bucket="frame-trim")
    body = os.urandom(4 * SEGMENT)
    for i in range(3):
        s3.put_object(Bucket="frame-trim", Key=f"o{i}", Body=body)
    wait_for(lambda: _kept_blocks(fresh_cluster.data) == 0, "the kept frame blocks to go")
    got = s3.get_object(Bucket="frame-trim", Key="o2")["Body"].read()
    assert got == body
