"""A process-wide byte budget for the upload data path (segments and frames in flight).

Each stripe write holds its body's receive buffers, a few segments and the frames they
are coded into (up to ~60 MiB for a part coded in 4 MiB segments, a single-segment object
about 2.5 times its size): with no cap, N concurrent large uploads hold N times that.
`UploadBudget` admits a write only once its minimum fits under the process's limit (a
gateway worker's share of the gateway's setting, `worker_share`): the receive buffers and
one segment for a streaming write (`storage/writehold.py`, ~8 MiB with 4 MiB segments),
the whole footprint (`write_footprint`) for a single-segment one. Later writes wait their
turn in arrival order before a byte of their body is read (so the client's socket, not
the gateway's memory, holds what they have not sent yet). An admitted write counts each
further segment and each frame set while it holds it and gives it back when freed.

No deadlock: admissions wait holding nothing; a running write takes more segments only
while they are free (`try_acquire`, never ahead of a waiting write) and otherwise waits
for its own to be freed, and the frames of a segment about to be coded come from the
`reserve` (one largest frame set admissions never take) when the rest is in use and the
write has no other frame set out (a further one is taken like a further segment, else
once its own are sent), so a write holding a segment can always code and send it. A minimum larger than the limit less
the reserve is cut to it, so a single write always gets in once the writes before it end.

No starvation by slow clients: a holder's body may arrive slowly (only silence is cut), so
(1) a small write (at most a sixteenth of the limit) that fits goes ahead of a waiting large
one during the large one's first `pass_s` seconds of waiting (after that nothing passes
it, so a steady flow of small writes cannot keep it out for ever), and (2) an S3 request
waits at most `UPLOAD_WAIT_S` (set for its task by the S3 front): then it is refused with
`Overloaded` (S3 503 SlowDown, which every SDK retries with backoff) instead of hanging
behind trickling uploads. Writers with no client to answer (block volumes, background
workers) wait as long as it takes, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextvars import ContextVar

from storage.config import Config
from storage.crypto.aead import TAG_BYTES
from storage.erasure import block_size
from storage.errors import Overloaded
from storage.shards.format import FRAME_HEAD_BYTES

UPLOAD_BUDGET_BYTES = 256 * 1024 * 1024  # default [gateway] upload_budget_bytes
WAIT_S = 30.0  # an S3 request's longest wait before SlowDown (under SDKs' 60 s read timeout)
SMALL_SHARE = 16  # a footprint of at most limit // SMALL_SHARE may pass waiting large ones
PASS_S = 2.0  # ... while the one at the head has waited less than this
# How long the current task's writes may wait for the budget (None: as long as it takes).
UPLOAD_WAIT_S: ContextVar[float | None] = ContextVar("upload_wait_s", default=None)
QUEUED_FRAMES = 4  # frames each node's sender queue holds (storage.stripes.QUEUE_FRAMES)
HELD_SEGMENTS = 4  # plaintext segments a streaming write holds: segmenter's two, encoding, hash lag
HELD_FRAME_SETS = QUEUED_FRAMES + 3  # queued, being sent, waiting to be queued, being encoded
MiB = 1024 * 1024
# One body's receive buffering at most: gateway/s3/bodyrecv.py's READY_BLOCKS full blocks
# and the one filling (1 MiB each), or a widened aiohttp read (storage/widereads.py: about
# three times WIDE_READ_BYTES); tests/unit/test_write_hold.py checks both against it.
RECEIVE_BYTES = 3 * MiB
BOUNDARY_BYTES = MiB  # a receive block a segment boundary cuts is held by both segments
WRITE_SLOTS = HELD_FRAME_SETS - 1  # segments a streaming write may have in flight at most


def segment_bytes(input_segment: int) -> int:
    """What one segment being cut or coded holds (`storage.writehold`): its plaintext, cut
    from receive blocks, one of them shared with the next segment."""
    return input_segment + BOUNDARY_BYTES


def frame_set_bytes(input_segment: int, k: int, width: int) -> int:
    """The frames one segment is coded into (one buffer, a frame per shard)."""
    return width * (FRAME_HEAD_BYTES + block_size(input_segment + TAG_BYTES, k))


def write_footprint(input_segment: int, segments: int, k: int, width: int,
                    size: int | None = None) -> int:
    """Bytes a stripe write of `segments` segments (-1 unknown) of `input_segment` bytes may
    hold at once: the plaintext segments and one frame set (a frame per shard) per segment
    in flight. A single-segment write of `size` bytes holds its body and one frame set."""
    if segments == 1:
        body = input_segment if size is None else min(max(size, 0), input_segment)
        return body + frame_set_bytes(body, k, width)
    frames = frame_set_bytes(input_segment, k, width)
    depth = HELD_SEGMENTS if segments < 0 else min(HELD_SEGMENTS, segments)
    sets = HELD_FRAME_SETS if segments < 0 else min(HELD_FRAME_SETS, segments)
    return depth * input_segment + sets * frames


def largest_frame_set(cfg: Config) -> int:
    """The frame set of the largest segment of the widest-coded profile: the coding
    reserve (`UploadBudget.reserve`) holds one, so a segment can always be coded."""
    segment = max(cfg.segment_size, cfg.large_segment_size) + TAG_BYTES
    return max(frame_set_bytes(segment, p.k, p.width) for p in cfg.profiles.values())


def largest_write(cfg: Config) -> int:
    """The footprint of the largest write this configuration makes: a multi-part upload's
    part in large segments (sealed, as a codec without a cipher takes them) of its widest
    profile: about 58 MiB with the default 4 MiB segments and 4+2."""
    segment = max(cfg.segment_size, cfg.large_segment_size) + TAG_BYTES
    return max(write_footprint(segment, -1, p.k, p.width) for p in cfg.profiles.values())


def worker_share(total: int, workers: int, one_write: int) -> int:
    """One gateway worker's part of `[gateway] upload_budget_bytes` (`total`): the setting
    bounds all of a gateway's processes together, so each of its `workers` gets an equal
    share, but never less than one largest write (`one_write`) plus the room a small write
    may take beside it (a `SMALL_SHARE`th of the share), or the whole setting when that is
    smaller: every worker can always run its largest upload and still admit small ones, so
    with many workers the gateway may hold up to `workers` times that floor."""
    floor = -(-one_write * SMALL_SHARE // (SMALL_SHARE - 1))  # one_write + floor // SMALL_SHARE
    return max(total // max(workers, 1), min(total, floor))


class UploadBudget:
    """At most `limit` bytes reserved at once by the writes of this process, granted in
    arrival order, except that a small footprint that fits passes a waiting large one
    during its first `pass_s` seconds; a wait given a deadline ends in `Overloaded`.

    `reserve` bytes are kept for the frames of segments being coded (`acquire_frames`):
    admissions and extra depth never take them, so a write holding a segment always gets
    the room to code it once other writes' frames have been sent (no deadlock)."""

    def __init__(self, limit: int = UPLOAD_BUDGET_BYTES, pass_s: float = PASS_S,
                 reserve: int = 0) -> None:
        if limit < 1:
            raise ValueError("upload budget must be positive")
        self.limit = limit
        self.reserve = min(max(reserve, 0), limit // 2)
        self.pass_s = pass_s
        self.small = limit // SMALL_SHARE
        self.refused = 0  # writes refused after waiting their deadline
        self.in_use = 0
        self.peak = 0  # most bytes reserved at once since start
        self.waited = 0  # writes that had to wait for the budget
        self._waiters: deque[tuple[int, asyncio.Future[None], float]] = deque()
        self._coding: deque[tuple[int, asyncio.Future[None]]] = deque()  # frames waiting

    @property
    def _ceiling(self) -> int:
        """What admissions and extra depth may fill: all but the coding reserve."""
        return self.limit - self.reserve

    def _grant(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)

    def _may_pass(self, n: int) -> bool:
        """Whether a small write that fits may go ahead of the waiters now."""
        if n > self.small or self.in_use + n > self._ceiling:
            return False
        head = next((w for w in self._waiters if not w[1].done()), None)
        return head is None or asyncio.get_running_loop().time() - head[2] < self.pass_s

    def _wake(self) -> None:
        while self._coding:  # frames first: their write holds a segment already
            n, fut = self._coding[0]
            if fut.done():
                self._coding.popleft()
                continue
            if self.in_use + n > self.limit:
                return  # nothing else goes ahead of a segment waiting to be coded
            self._coding.popleft()
            self._grant(n)
            fut.set_result(None)
        while self._waiters:
            n, fut, _ = self._waiters[0]
            if fut.done():  # cancelled or timed out while waiting
                self._waiters.popleft()
                continue
            if self.in_use + n > self._ceiling:
                break
            self._waiters.popleft()
            self._grant(n)
            fut.set_result(None)
        for w in list(self._waiters)[1:]:  # small ones that fit pass a young blocked head
            if not w[1].done() and self._may_pass(w[0]):
                self._waiters.remove(w)
                self._grant(w[0])
                w[1].set_result(None)

    async def acquire(self, nbytes: int, wait_s: float | None = None) -> int:
        """Reserve `nbytes` (cut to the limit less the reserve), waiting in line (at most
        `wait_s` if given); returns what was reserved. Raises `Overloaded` when the wait
        runs out."""
        n = min(max(nbytes, 0), self._ceiling)
        if (self.in_use + n <= self._ceiling and not self._coding
                and (not self._waiters or self._may_pass(n))):
            self._grant(n)
            return n
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((n, fut, loop.time()))
        self.waited += 1
        timer = None if wait_s is None else loop.call_later(wait_s, self._expire, fut)
        try:
            await fut
        except Overloaded:
            self.refused += 1
            self._wake()  # a timed-out head may have held back smaller ones
            raise
        except BaseException:
            self._abandon(fut, n)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return n

    def _abandon(self, fut: asyncio.Future[None], n: int) -> None:
        """A wait ended by a cancellation: nothing stays reserved for it."""
        if not fut.done():
            fut.cancel()
            self._wake()  # a cancelled head may have held back smaller ones
        elif not fut.cancelled() and fut.exception() is None:
            self.release(n)  # granted as the wait was cancelled: give it back
        else:  # refused in the same moment (exception now retrieved): never granted
            self._wake()

    def try_acquire(self, nbytes: int) -> bool:
        """Reserve `nbytes` only if it fits now and nobody waits (a running write's extra
        depth never goes ahead of a write waiting to be admitted or to code)."""
        if (self.in_use + nbytes > self._ceiling or self._coding
                or any(not w[1].done() for w in self._waiters)):
            return False
        self._grant(nbytes)
        return True

    def try_acquire_frames(self, nbytes: int, first: bool = True) -> int | None:
        """`acquire_frames` if it needs no wait (what was reserved), else None. Only a
        write's `first` frame set out (it has no other) goes ahead of admissions and may
        use the reserve; any further one is taken like extra depth, under the ceiling and
        only while nobody waits."""
        n = min(max(nbytes, 0), self.reserve)
        if self._coding or self.in_use + n > (self.limit if first else self._ceiling):
            return None
        if n and not first and any(not w[1].done() for w in self._waiters):
            return None
        self._grant(n)
        return n

    async def acquire_frames(self, nbytes: int) -> int:
        """Reserve `nbytes` for the frames of a segment about to be coded, the reserve
        included, ahead of admissions, waiting as long as it takes (frames wait only for
        other frames to be sent). Cut to the reserve (no reserve: frames are not counted),
        so one always fits once no frames are held."""
        n = min(max(nbytes, 0), self.reserve)
        if not self._coding and self.in_use + n <= self.limit:
            self._grant(n)
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._coding.append((n, fut))
        try:
            await fut
        except BaseException:
            self._abandon(fut, n)
            raise
        return n

    @staticmethod
    def _expire(fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_exception(Overloaded("the gateway's upload memory has been taken for "
                                         "too long by other uploads; retry later"))

    def release(self, n: int) -> None:
        self.in_use -= n
        self._wake()

    @contextlib.asynccontextmanager
    async def reserved(self, nbytes: int) -> AsyncIterator[int]:
        n = await self.acquire(nbytes)
        try:
            yield n
        finally:
            self.release(n)
