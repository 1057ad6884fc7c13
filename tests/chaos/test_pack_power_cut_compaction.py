"""Power cuts inside pack compaction and a pack's seal (issue 17), on a disk that loses its
write cache (`tests.power_cut`): all of it, or an arbitrary subset of its sectors (a drive
writes its cache back in its own order; only a flush orders anything).

A pack store on ext4 over the volatile disk holds packs whose shards were mostly deleted
(their tombstones in later packs); compaction runs while writers PUT and DELETE and readers
read the shards being moved, and the power goes at a named step (`PackStore.hook`): after a
compaction step's copies are durable but before the index moves ("copied"), before and after
a compacted pack's unlink ("drop", "unlinked": its directory not yet fsynced), between a
footer's write and its fdatasync ("footer"), right after a seal ("sealed"), between a group's
write and its fdatasync ("written"), after a pack's dead bodies were punched ("punched":
`nodes.packpunch`, run after compaction as a node's compactor does). Remounted from what
the disk held (journal replayed): every shard acknowledged before the cut is indexed with
its bytes, no acknowledged delete
returns, and any damage recovery reports lies past what was durable at the cut (bytes never
acknowledged); with the whole cache lost, only a torn tail, and a second open finds nothing.
A read during compaction never returns other bytes than the shard's.

In-process (a real node process adds nothing here and costs seconds); ~2-5 s a case."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nodes import packsteps
from nodes.packstore import PackStore
from tests.contract.node_harness import make_shard
from tests.power_cut import NEEDS, Disk, made_disk

pytestmark = NEEDS

SEAL = 32 * 1024
IMAGE_BYTES = 64 * 1024 * 1024
STEP = 12 * 1024  # a compaction step's bytes: several steps a pack


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    yield from made_disk(tmp_path, IMAGE_BYTES)


@dataclass
class Run:
    """What the store acknowledged before the cut, and where its packs were durable then."""

    disk: Disk
    point: str
    nth: int
    keep: int | None
    held: dict[str, bytes] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    durable: dict[int, int] = field(default_factory=dict)  # pack -> bytes durable at the cut
    armed: bool = False
    seen: int = 0
    cut: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    cut_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def hook(self, point: str, seq: int, store: PackStore) -> None:
        """The committer at a named step: the nth `point` after arming cuts the power."""
        if not self.armed or self.cut.is_set() or point != self.point:
            return
        self.seen += 1
        if self.seen < self.nth:
            return
        self.durable = dict(store.sizes)  # sizes move only after a write's fdatasync
        self.disk.cut(self.keep)
        self.cut.set()  # set before any later answer: an answer seen after it never counts
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.cut_seen.set)

    def ack_put(self, sid: str, body: bytes) -> None:
        if not self.cut.is_set():
            self.held[sid] = body

    def ack_delete(self, sid: str) -> None:
        if not self.cut.is_set():
            self.deleted.add(sid)


def _shard(rng: random.Random) -> tuple[str, bytes]:
    sid, _, _, body = make_shard(index=rng.randrange(6), frames=rng.randrange(1, 3),
                                 block_size=4096, last=rng.randrange(1, 4096))
    return sid, body


async def _put(store: PackStore, run: Run, sid: str, body: bytes) -> None:
    await store.put(sid, [body])
    run.ack_put(sid, body)


async def _delete(store: PackStore, run: Run, sid: str) -> None:
    run.held.pop(sid, None)  # once sent, a delete may take effect: no promise either way
    if await store.delete(sid):
        run.ack_delete(sid)


async def _writer(store: PackStore, run: Run, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if run.held and rng.random() < 0.4:
            await _delete(store, run, rng.choice(sorted(run.held)))
        else:
            await _put(store, run, *_shard(rng))


async def _reader(store: PackStore, run: Run, rng: random.Random, stop: asyncio.Event) -> None:
    """Reads shards while compaction moves them: their bytes, or gone, never others."""
    while not stop.is_set():
        if not run.held:
            await asyncio.sleep(0)
            continue
        sid = rng.choice(sorted(run.held))
        body = run.held[sid]
        for _ in range(3):  # compaction unlinked the pack located: locate again
            loc = store.locate(sid)
            if loc is None:
                break
            try:
                got = await asyncio.to_thread(store.read, loc)
            except FileNotFoundError:
                continue
            if store.locate(sid) is not None:  # a delete may land meanwhile (then the
                assert got == body, sid  # old bytes, or a punched body's zeros)
            elif got:
                block = os.stat(store.pack_dir).st_blksize
                assert _body_or_punched(got, body, loc.offset, block), sid
            break


def _body_or_punched(got: bytes, body: bytes, offset: int, block: int) -> bool:
    """Whether `got` is `body` (stored at `offset`) with any of the whole file-system
    blocks inside it zeroed: a punch keeps the partial blocks at each end (review21f F4),
    and a read racing it may see some blocks punched and others not yet."""
    if len(got) != len(body):
        return False
    zero = bytes(block)
    at = 0
    while at < len(body):
        end = min(len(body), (offset + at) // block * block + block - offset)
        whole = (offset + at) % block == 0 and end - at == block
        if got[at:end] != body[at:end] and not (whole and got[at:end] == zero):
            return False
        at = end
    return True


async def _load(store: PackStore, run: Run, seed: int) -> None:
    rng = random.Random(seed)
    doomed: list[str] = []
    for _ in range(30):  # a group fills its pack past the seal: small groups
        group = [_shard(rng) for _ in range(3)]
        await asyncio.gather(*(_put(store, run, sid, body) for sid, body in group))
        for sid, _ in group:  # odd packs mostly deleted (compaction candidates), even ones
            loc = store.locate(sid)  # mostly live; each delete a few groups later, so
            assert loc is not None  # odd packs hold tombstones of PUTs in even packs
            if rng.random() < (0.9 if loc.seq % 2 else 0.15):  # that must outlive them
                doomed.append(sid)
        while len(doomed) > 4:
            await _delete(store, run, doomed.pop(0))
    assert len(store.candidates()) >= 4, store.candidates()
    run.loop = asyncio.get_running_loop()
    run.armed = True
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_writer(store, run, random.Random(seed * 10 + i), stop))
             for i in range(3)]
    tasks.append(asyncio.create_task(_reader(store, run, random.Random(seed), stop)))
    compaction = asyncio.create_task(_punch_and_compact(store))
    cut = asyncio.create_task(run.cut_seen.wait())
    try:
        await asyncio.wait([cut, compaction, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t.done():
                t.result()  # a reader that saw other bytes, a writer that failed
        if not run.cut.is_set() and run.point in ("footer", "sealed", "written"):
            await asyncio.wait_for(cut, 60)  # no more compaction: the writers reach it
    finally:
        cut.cancel()
        stop.set()
        for t in tasks:
            t.cancel()
        got = await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(BaseException):
            await compaction
    for r in got:
        if isinstance(r, AssertionError):
            raise r
    assert run.cut.is_set(), f"the cut point {run.point} #{run.nth} was never reached"


async def _punch_and_compact(store: PackStore) -> None:
    """A node's compactor run: compaction, then the dead bodies left punched in place."""
    try:
        await store.compact()
    finally:
        await store.punch(min_dead=0)


def _beyond_durable(run: Run, store: PackStore) -> list[tuple[int, int, int]]:
    """Damage ranges (pack, start, end) that begin below what was durable at the cut: bytes
    acknowledged, found damaged."""
    out = []
    for d in store.damage:
        spans = [*d.gaps, *((r.offset, r.end) for r in d.bad), *([d.torn] if d.torn else [])]
        out += [(d.seq, a, b) for a, b in spans if a < run.durable.get(d.seq, 0)]
    return out


CASES = [  # (point, nth, keep): keep None loses the whole cache, else a subset is written
    ("copied", 1, None), ("copied", 2, 7), ("drop", 1, 3), ("unlinked", 1, None),
    ("unlinked", 2, 11), ("unlinked", 3, None), ("copied", 3, 17), ("footer", 1, 5),
    ("sealed", 1, None), ("written", 3, 13), ("punched", 1, None), ("punched", 3, 7),
]


@pytest.mark.parametrize("point,nth,keep", CASES)
async def test_a_power_cut_in_compaction_or_a_seal_loses_no_acknowledged_word(
        disk: Disk, point: str, nth: int, keep: int | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packsteps, "STEP_BYTES", STEP)
    disk.attach(volatile=True)
    root = disk.mnt / "node"
    run = Run(disk, point, nth, keep)
    store = PackStore(root, seal_bytes=SEAL)
    store.open()
    store.hook = lambda p, seq: run.hook(p, seq, store)
    try:
        await _load(store, run, seed=CASES.index((point, nth, keep)) + 1)
    finally:
        store.hook = None
        print("punched:", store.punched)
        await asyncio.to_thread(store.close)
    disk.detach()
    assert run.held and run.deleted

    disk.attach(volatile=False)  # what the disk held at the cut; ext4 replays its journal
    for attempt in (1, 2):
        again = PackStore(root, seal_bytes=SEAL)
        again.open()
        try:
            assert _beyond_durable(run, again) == [], (attempt, again.damage)
            if keep is None:  # the whole cache lost: a torn tail at most, then nothing
                assert [d for d in again.damage if d.gaps or d.bad or attempt == 2] == []
            for sid, body in run.held.items():
                loc = again.locate(sid)
                assert loc is not None and again.read(loc) == body, (sid, attempt)
            assert [sid for sid in run.deleted if sid in again.index] == [], attempt
        finally:
            again.close()
