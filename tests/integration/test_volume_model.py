"""Model-based test of block volumes: random I/O, barriers, snapshots, clones and crashes.

An in-memory model of the device keeps, per block, every content it may hold: after a
barrier (fsync) exactly one; each later write adds one (a crash may keep any of them, but
nothing older than the barrier). Random writes, trims, fsyncs, snapshots taken while commits
are in flight, clones, resizes, kills and remounts run against a real local cluster, and every
read checks the model: every fsynced byte must survive everything.

The main round drives the storage library with the block driver's write-back cache (fast);
a smaller round goes through a real FUSE mount and kill -9 of its daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import threading
from pathlib import Path

import pytest

from gateway.block.cache import ExtentCache
from storage.volume_overlay import JournaledVolume
from storage.volumes import VolumeAttached, VolumeHandle, VolumeService
from tests.integration.test_volumes import (  # noqa: F401 - fixture and requirements
    Vol,
    _open,
    _states,
    pytestmark,
    vol,
)

MiB = 1 << 20
T = "default"


def _h(b: bytes) -> bytes:
    return hashlib.blake2b(b, digest_size=16).digest()


class Model:
    """Per block: the current bytes, and the hashes of every content a crash may leave."""

    def __init__(self, blocks: int, bs: int) -> None:
        self.bs = bs
        self.cur = [bytes(bs) for _ in range(blocks)]
        self.maybe: list[list[bytes]] = [[_h(b)] for b in self.cur]

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            i, off = divmod(offset + pos, self.bs)
            n = min(self.bs - off, len(data) - pos)
            blk = bytearray(self.cur[i])
            blk[off:off + n] = data[pos:pos + n]
            self.cur[i] = bytes(blk)
            self.maybe[i].append(_h(self.cur[i]))
            pos += n

    def barrier(self) -> None:
        self.maybe = [[_h(b)] for b in self.cur]

    def grow(self, blocks: int) -> None:
        while len(self.cur) < blocks:
            self.cur.append(bytes(self.bs))
            self.maybe.append([_h(self.cur[-1])])

    def check(self, i: int, got: bytes, what: str, exact: bool = False) -> None:
        """`got` is a content block i may hold; it becomes the only one (it is durable)."""
        ok = _h(got) == self.maybe[i][-1] if exact else _h(got) in self.maybe[i]
        assert ok, f"{what}: block {i} holds bytes the model never allowed (fsynced data lost)"
        self.cur[i] = got
        self.maybe[i] = [_h(got)]


Cache = ExtentCache | JournaledVolume


async def _attach(svc: VolumeService, name: str, holder: str,
                  journal: bool = False) -> tuple[VolumeHandle, Cache]:
    """Attach; a killed holder's lease (same process here, so alive) lapses after its TTL.

    Not shorter: every renewal changes the lease record that each commit compares, so a
    renewal interval (TTL / 3) below a loaded machine's commit latency would starve commits.
    """
    while True:
        try:
            h = await svc.open(T, name, holder=holder, lease_ttl_s=3.0)
            break
        except VolumeAttached:
            await asyncio.sleep(0.1)
    cache: Cache = (JournaledVolume(h, max_dirty=8 * MiB) if journal
                    else ExtentCache(h, max_dirty=8 * MiB))
    cache.start()
    return h, cache


async def _kill(h: VolumeHandle, cache: Cache) -> None:
    """A crash: background commits and lease renewal stop; nothing is flushed."""
    tasks = cache._tasks if isinstance(cache, JournaledVolume) else [cache._task]
    for task in (*tasks, h._renewer):
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    h._renewer = None


async def _verify(h: VolumeHandle, model: Model, what: str, exact: bool = False) -> None:
    for i in range(len(model.cur)):
        data = await h.read_extent(i)
        model.check(i, data if data is not None else bytes(model.bs), what, exact)


async def _model_round(svc: VolumeService, seed: int, ops: int,
                       journal: bool = False) -> dict[str, int]:
    rng = random.Random(seed)
    name = f"model{seed}" + ("j" if journal else "")
    es, n = MiB, 6
    await svc.create(T, name, n * es)
    model = Model(n, es)
    h, cache = await _attach(svc, name, "m0", journal)
    snaps: dict[str, list[list[bytes]]] = {}
    grown = n
    tally = dict.fromkeys(("write", "trim", "fsync", "snapshot", "clone", "resize", "kill",
                           "remount"), 0)
    for step in range(ops):
        op = rng.choices(list(tally), weights=[10, 2, 4, 2, 1, 1, 2, 1])[0]
        tally[op] += 1
        size = len(model.cur) * es
        if op in ("write", "trim"):
            off = rng.randrange(0, size - 4096) // 512 * 512
            length = min(rng.randrange(512, es // 2), size - off)
            data = rng.randbytes(length) if op == "write" else bytes(length)
            if op == "write":
                await cache.write(off, data)
            else:
                await cache.zero(off, length)
            model.write(off, data)
        elif op == "fsync":
            await cache.flush()
            model.barrier()
        elif op in ("snapshot", "resize"):
            # Taken while the flush's commits are in flight: those writes were sealed
            # before the volume record changed and must still commit readable.
            allowed = [list(m) for m in model.maybe]

            async def change(op: str = op, step: int = step) -> None:
                for _ in range(3):  # let the flush start its stripe writes first
                    await asyncio.sleep(0)
                if op == "snapshot":
                    await svc.snapshot(T, name, f"s{step}")
                else:
                    await svc.resize(T, name, (len(model.cur) + 2) * es)
            # A snapshot freezes extents: with the journal, fold it first (as `quiesce`).
            await asyncio.gather(cache.checkpoint(), change())
            model.barrier()
            if op == "snapshot":
                snaps[f"s{step}"] = allowed
            else:
                grown = len(model.cur) + 2  # visible to the next attach
        elif op == "clone" and snaps:
            snap = rng.choice(sorted(snaps))
            clone = f"{name}c{step}"
            await svc.clone(T, name, snap, clone)
            ro = await svc.open(T, name, holder="ro", snapshot=snap)
            cm = Model(len(snaps[snap]), es)
            cm.maybe = snaps[snap]
            await _verify(ro, cm, f"snapshot {snap}")
            snaps[snap] = cm.maybe  # now known exactly
            ch = await svc.open(T, clone, holder="c")
            await _verify(ch, cm, f"clone of {snap}", exact=True)
            extra = rng.randbytes(4096)
            await ch.write(0, extra)  # the clone diverges; the origin must not notice
            assert (await ch.read(0, 4096)) == extra
            await ch.close()
        elif op == "kill":
            await _kill(h, cache)
            h, cache = await _attach(svc, name, f"m{step}", journal)
            model.grow(grown)
            await _verify(h, model, f"after kill at step {step} (seed {seed})")
        elif op == "remount":
            await cache.stop()
            await h.close()
            h, cache = await _attach(svc, name, f"m{step}", journal)
            model.grow(grown)
            await _verify(h, model, f"after remount at step {step} (seed {seed})", exact=True)
    await cache.stop()
    await h.close()
    h, cache = await _attach(svc, name, "final", journal)
    model.grow(grown)
    await _verify(h, model, f"final (seed {seed})", exact=True)
    for snap, allowed in snaps.items():  # every snapshot still reads what it froze
        ro = await svc.open(T, name, holder="ro", snapshot=snap)
        sm = Model(len(allowed), es)
        sm.maybe = allowed
        await _verify(ro, sm, f"snapshot {snap} at the end (seed {seed})")
    await cache.stop()
    await h.close()
    return tally


@pytest.mark.parametrize("journal", [False, True], ids=["extent-cache", "journal"])
def test_model_storage_api(vol: Vol, journal: bool) -> None:  # noqa: F811
    async def go() -> None:
        c, svc = await _open(vol)
        try:
            for seed in (1201,):
                tally = await _model_round(svc, seed, ops=30, journal=journal)
                assert tally["snapshot"] and tally["kill"], tally
        finally:
            # What the killed handles left running ends here, while the store is still open.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await c.close()
    asyncio.run(go())


FALLOC_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def _punch(fd: int, offset: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    assert libc.fallocate(fd, FALLOC_PUNCH, offset, length) == 0, os.strerror(ctypes.get_errno())


def _fuse_ops(fd: int, rng: random.Random, model: Model, count: int) -> None:
    size = len(model.cur) * model.bs
    for _ in range(count):
        op = rng.choices(("write", "punch", "fsync"), weights=(8, 2, 3))[0]
        off = rng.randrange(0, size - 4096)
        length = min(rng.randrange(1, 3 * MiB // 2), size - off)
        if op == "write":
            data = rng.randbytes(length)
            assert os.pwrite(fd, data, off) == length
            model.write(off, data)
        elif op == "punch":
            _punch(fd, off, length)
            model.write(off, bytes(length))
        else:
            os.fsync(fd)
            model.barrier()


def _fuse_verify(path: Path, model: Model, what: str, exact: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        for i in range(len(model.cur)):
            model.check(i, os.pread(fd, model.bs, i * model.bs), what, exact)
    finally:
        os.close(fd)


def test_model_through_fuse_with_kill(vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    """The kernel's page cache may write back any 4 KiB page on its own: the model's
    block is a page. Snapshots run from another process while the writes go on."""
    rng = random.Random(1210)
    vol.run("create", "fmodel", "--size", "16M")
    d = tmp_path / "raw"
    vol.mount("fmodel", d)
    model = Model(16 * MiB // 4096, 4096)
    snapper_errors: list[str] = []
    fd = os.open(d / "volume", os.O_RDWR)
    try:
        _fuse_ops(fd, rng, model, 10)
        os.fsync(fd)
        model.barrier()

        def snapshots() -> None:
            for n in range(2):
                r = vol.run("snapshot", "create", "fmodel", f"f{n}", check=False)
                if r.returncode != 0:
                    snapper_errors.append(r.stderr)
        t = threading.Thread(target=snapshots)
        t.start()
        while t.is_alive():  # writes and fsyncs while the snapshots are taken
            _fuse_ops(fd, rng, model, 4)
        t.join()
        assert not snapper_errors, snapper_errors
        _fuse_ops(fd, rng, model, 8)
        pid = next(s.pid for s in _states(vol) if s.volume == "fmodel")
        os.kill(pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    r = vol.run("unmount", str(d), check=False)
    vol.mounts.remove(d)
    assert r.returncode == 1 and "may have been lost" in r.stderr, r.stderr
    vol.mount("fmodel", d)  # the dead daemon's lease is taken over at once
    _fuse_verify(d / "volume", model, "after kill -9")
    fd = os.open(d / "volume", os.O_RDWR)
    try:
        _fuse_ops(fd, rng, model, 10)
        os.fsync(fd)
        model.barrier()
    finally:
        os.close(fd)
    vol.unmount(d)
    vol.mount("fmodel", d)
    _fuse_verify(d / "volume", model, "after a clean remount", exact=True)
    vol.unmount(d)
