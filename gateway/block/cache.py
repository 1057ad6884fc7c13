"""A bounded write-back cache of whole extents in front of an attached volume.

Small writes land in a dirty extent buffer (read-modify-write once per extent); a background
task commits dirty extents after a short delay or when the dirty bytes pass a high-water mark,
and writers wait when the bound is reached. `flush()` is the durability barrier: it returns
only when every write accepted before it is committed at write quorum, and raises if any
cannot be. An extent of all zeros is trimmed instead of stored (thin provisioning), which
is also how `zero()` (a punched hole) frees space.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict

from storage.errors import KeyUnavailable
from storage.volume_records import check_snapshot_name
from storage.volumes import VolumeHandle
from storage.waits import wait_event

FLUSH_DELAY_S = 1.0
PARALLEL_COMMITS = 8


class _Dirty:
    __slots__ = ("buf", "version", "since")

    def __init__(self, buf: bytearray) -> None:
        self.buf = buf
        self.version = 0
        self.since = time.monotonic()


class ExtentCache:
    def __init__(self, vol: VolumeHandle, max_dirty: int = 128 << 20,
                 max_clean: int = 128 << 20) -> None:
        self.vol = vol
        self.es = vol.vol.extent_size
        self._max_dirty_n = max(2, max_dirty // self.es)
        self._max_clean_n = max(2, max_clean // self.es)
        self._dirty: dict[int, _Dirty] = {}
        self._clean: OrderedDict[int, bytes] = OrderedDict()
        self._loading: dict[int, asyncio.Future[bytes]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._space = asyncio.Condition()
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(PARALLEL_COMMITS)
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher())

    async def stop(self) -> None:
        """Flush everything, then stop the background task (unmount barrier)."""
        try:
            await self.flush()
        finally:
            if self._task:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def checkpoint(self) -> None:
        """Every write is in its extent once flushed (no journal here)."""
        await self.flush()

    async def snapshot(self, name: str) -> int:
        """Flush, then freeze snapshot `name` (its generation). Extents commit in barrier
        order here, so whatever lands between the two is a crash-consistent point too."""
        await self.flush()
        check_snapshot_name(name)
        while True:  # only while the lease is ours (see `JournaledVolume.snapshot`)
            v = self.vol.vol
            g = await self.vol.svc.freeze(v.tenant, v.name, name, await self.vol.lease_guard())
            if g is not None:
                return g

    @property
    def dirty_bytes(self) -> int:
        return len(self._dirty) * self.es

    # reads ---------------------------------------------------------------------------------

    async def _extent(self, idx: int) -> bytes:
        d = self._dirty.get(idx)
        if d is not None:
            return self.vol.fit(idx, bytes(d.buf))
        c = self._clean.get(idx)
        if c is not None:
            self._clean.move_to_end(idx)
            return self.vol.fit(idx, c)
        fut = self._loading.get(idx)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._loading[idx] = fut
        try:
            data = await self.vol.read_extent(idx)
            out = data if data is not None else bytes(self.vol.extent_len(idx))
            fut.set_result(out)
            self._remember(idx, out)
            return out
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it via their await
            raise
        finally:
            del self._loading[idx]

    def _remember(self, idx: int, data: bytes) -> None:
        self._clean[idx] = data
        self._clean.move_to_end(idx)
        while len(self._clean) > self._max_clean_n:
            self._clean.popitem(last=False)

    async def read(self, offset: int, length: int) -> bytes:
        await self.vol.check_held()  # Fenced: the cache is no longer what the volume holds
        try:
            await self.vol.check_revoked()
        except KeyUnavailable:
            self._clean.clear()
            raise
        end = min(offset + length, self.vol.vol.size)
        if offset >= end:
            return b""
        first, last = offset // self.es, (end - 1) // self.es
        parts = await asyncio.gather(*(self._extent(i) for i in range(first, last + 1)))
        blob = b"".join(parts) if len(parts) > 1 else parts[0]
        base = first * self.es
        return bytes(blob[offset - base:end - base])

    # writes --------------------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        await self.vol.check_held()
        end = min(offset + len(data), self.vol.vol.size)
        pos = offset
        while pos < end:
            idx, off = divmod(pos, self.es)
            n = min(self.vol.extent_len(idx) - off, end - pos)
            chunk = data[pos - offset:pos - offset + n]
            d = self._dirty.get(idx)
            if d is None:
                await self._wait_space()
                d = self._dirty.get(idx)
            if d is None:
                if off == 0 and n == self.vol.extent_len(idx):
                    buf = bytearray(chunk)
                else:
                    buf = bytearray(await self._extent(idx))
                d = self._dirty.get(idx)  # another writer may have dirtied it meanwhile
                if d is None:
                    d = self._dirty[idx] = _Dirty(buf)
                    self._clean.pop(idx, None)
            if len(d.buf) < self.vol.extent_len(idx):  # outgrown: see VolumeHandle.fit
                d.buf += bytes(self.vol.extent_len(idx) - len(d.buf))
            d.buf[off:off + n] = chunk
            d.version += 1
            pos += n
        if len(self._dirty) * 2 >= self._max_dirty_n:
            self._wake.set()
        return end - offset

    async def zero(self, offset: int, length: int) -> None:
        """Punch a hole (discard / fstrim): the range reads as zeros from now on.

        It is a write of zeros through the cache, so dirty data in the range is overwritten
        (no later flush resurrects it) and an extent left all zero is trimmed when committed
        (freed unless a snapshot holds it). An extent never written and not dirty already
        reads as zeros and is skipped, so discarding a whole fresh volume costs nothing.
        """
        end = min(offset + length, self.vol.vol.size)
        pos = offset
        while pos < end:
            idx, off = divmod(pos, self.es)
            n = min(self.vol.extent_len(idx) - off, end - pos)
            if idx in self._dirty or self.vol.holds_data(idx):
                await self.write(pos, bytes(n))
            pos += n

    async def _wait_space(self) -> None:
        async with self._space:
            while len(self._dirty) >= self._max_dirty_n:
                self._wake.set()
                await self._space.wait()

    # commits -------------------------------------------------------------------------------

    async def _commit(self, idx: int) -> None:
        lock = self._locks.setdefault(idx, asyncio.Lock())
        async with lock, self._sem:
            d = self._dirty.get(idx)
            if d is None:
                return
            version = d.version
            data = bytes(d.buf)
            if data.count(0) == len(data):
                await self.vol.trim_extent(idx)
            else:
                await self.vol.write_extent(idx, data)
            self.commits += 1
            if self._dirty.get(idx) is d and d.version == version:
                del self._dirty[idx]
                self._remember(idx, data)
                async with self._space:
                    self._space.notify_all()

    async def flush(self) -> None:
        """Durability barrier: commit every extent dirty now (and anything re-dirtied)."""
        self.vol.check_fenced()
        while self._dirty:
            targets = list(self._dirty)
            results = await asyncio.gather(*(self._commit(i) for i in targets),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def _flusher(self) -> None:
        while True:
            await wait_event(self._wake, FLUSH_DELAY_S)
            self._wake.clear()
            now = time.monotonic()
            full = len(self._dirty) * 2 >= self._max_dirty_n
            due = [i for i, d in list(self._dirty.items())
                   if full or now - d.since >= FLUSH_DELAY_S]
            if not due:
                continue
            results = await asyncio.gather(*(self._commit(i) for i in due),
                                           return_exceptions=True)
            errs = [r for r in results if isinstance(r, BaseException)]
            if errs:
                from storage.volumes import Fenced

                if any(isinstance(e, Fenced) for e in errs):
                    self.error = next(e for e in errs if isinstance(e, Fenced))
                    return
                await asyncio.sleep(1.0)  # retry later; barriers will report the error
