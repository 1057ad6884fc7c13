"""Snapshots of a FUSE mount under a live writer: point-in-time, without folding the journal.

A writer thread stamps pages in a fixed random order, one fsync each (so each is journaled,
never a sequential run), while the CLI takes snapshots. Each snapshot must hold a prefix of
the writer's sequence: every page fsynced before the call, none issued after it returned,
and no page without every earlier one. Each is frozen with the journal range it replays (the
daemon folds nothing for it), a clone reads what the snapshot holds, and deleting the
snapshots frees the segments they kept.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from pathlib import Path

from storage.keyspace import kept_journal_prefix, span, volume_key
from storage.records import unpack
from tests.integration.cluster import wait_for
from tests.integration.test_volumes import (  # noqa: F401 - fixture and requirements
    Vol,
    pytestmark,
    vol,
)

PAGE = 4096
PAGES = 2048  # an 8 MiB volume


def stamp(i: int) -> bytes:
    return f"{i:08d}".encode() * (PAGE // 8)


def held_pages(image: bytes, order: list[int]) -> list[int]:
    """Which writes of the sequence the image holds (checked to be stamped right)."""
    out = []
    for i, pos in enumerate(order):
        page = image[pos * PAGE:(pos + 1) * PAGE]
        if page != bytes(PAGE):
            assert page == stamp(i), f"page {pos} holds neither write {i} nor zeros"
            out.append(i)
    return out


def kept_segments(v: Vol, vid: str) -> int:
    conn = sqlite3.connect(f"file:{v.cluster.db_path}?mode=ro", uri=True)
    try:
        a, b = span(kept_journal_prefix(vid))
        return int(conn.execute("SELECT count(*) FROM kv WHERE k>=? AND k<?", (a, b)).fetchone()[0])
    finally:
        conn.close()


def test_snapshots_under_a_writer_hold_a_prefix_and_the_journal(vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    name = "held"
    vol.run("create", name, "--size", "8M")
    raw = tmp_path / "raw"
    vol.mount(name, raw)
    order = random.Random(3).sample(range(PAGES), PAGES)
    acked: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        fd = os.open(raw / "volume", os.O_WRONLY)
        try:
            for i, pos in enumerate(order):
                if stop.is_set():
                    return
                os.pwrite(fd, stamp(i), pos * PAGE)
                os.fsync(fd)
                acked.append(i)
        finally:
            os.close(fd)
    t = threading.Thread(target=writer)
    t.start()
    snaps = []
    try:
        for k in range(3):
            wait_for(lambda k=k: len(acked) >= 30 * (k + 1) or not t.is_alive(), "writes")
            before = len(acked)  # every write up to here was fsynced before the call
            vol.run("snapshot", "create", name, f"s{k}")
            snaps.append((f"s{k}", before, len(acked) + 1))  # at most one more was issued
    finally:
        stop.set()
        t.join()
    for snap, before, issued in snaps:
        image = tmp_path / f"{snap}.img"
        vol.run("export", name, str(image), "--snapshot", snap)
        got = held_pages(image.read_bytes(), order)
        assert got == list(range(len(got))), f"{snap} is not a prefix of the writes"
        assert before <= len(got) <= issued, (snap, before, len(got), issued)
    rec = unpack(vol.cluster.db_get(volume_key("default", name)))
    assert any(s.get("journal") for s in rec["snapshots"].values()), rec["snapshots"]
    vol.run("clone", f"{name}@s1", "held-c")
    craw = tmp_path / "c"
    vol.mount("held-c", craw)
    with open(craw / "volume", "rb") as f:
        assert f.read() == (tmp_path / "s1.img").read_bytes()
    vol.unmount(craw)
    vol.unmount(raw)  # the daemon folds everything: the segments the snapshots hold are kept
    assert kept_segments(vol, rec["id"]) > 0
    vol.run("delete", "held-c")
    for snap, _, _ in snaps:
        vol.run("snapshot", "delete", name, snap)
    assert kept_segments(vol, rec["id"]) == 0
