"""One etcd commit batcher for all of a gateway's worker processes.

etcd's members spend ~1.15 ms of CPU per Txn against ~0.1 ms per commit nested in it
(benchmarks/README.md, session 19), so the commits per Txn decide their cost. Each worker
process batching alone splits the gateway's concurrent commits in as many Txns as there are
workers. Instead worker 0 owns the batcher (`CommitServer`, on a Unix socket in the workers'
private run directory, 0700: only this user's processes reach it, as the workers' metrics
sockets) and the other workers send it their commits (`SharedCommits`), one frame each way.

What a caller sees is what its own Txn would have given it:
- the answer is that of the nested Txn worker 0 sent (`TxnBatcher`'s guarantees: one winner
  per conditional race, compares and the lease fence evaluated by etcd);
- an error worker 0 met (etcd unreachable, no leader, full, a request over etcd's size
  limit) comes back with its message, to that caller alone;
- a commit sent to worker 0 whose answer never comes fails with "outcome unknown", as a lone
  Txn whose connection broke after it was sent: it may have applied. That is: no answer
  within FORWARD_TIMEOUT_S (that commit alone), or worker 0 closed the connection (gone)
  and both the commit's take-in deadline and the deadline in etcd of any request worker 0
  sent for it passed. Such a commit is never resent. A worker 0 that
  leaves a ping unanswered PING_S (pinged every CHECK_S while commits wait on it) may be
  stopped or only slow (a loaded host): the next commits go direct, but the ones sent keep
  waiting for their answers (a slow worker 0 still gives them);
- a commit that is known not to have been sent goes straight to etcd through the worker's
  own batcher, so a worker keeps serving: worker 0 not listening (yet), gone, or stopped or
  stuck within AWAY_S (reconnections are tried in the background meanwhile); a frame over
  MAX_FRAME; or one worker 0 refused unsent (taken in after its take-in deadline, or not sent
  to etcd `give_up_margin()` before its give-up time).

Never sent to etcd after its caller could have been told it failed: each frame carries its
take-in deadline (sent + PING_S, CLOCK_MONOTONIC: one clock for every process on the host),
and worker 0 refuses a frame it takes in later; and its give-up time (sent +
FORWARD_TIMEOUT_S, when the sender stops waiting): worker 0's batcher drops it, unsent, if it
is taken for a request `give_up_margin()` before that or later, or after its connection
closed (`TxnBatcher.run`'s `wanted`, checked then, whatever worker 0's loop did meanwhile:
stopped, lagging), and again before its request goes to another etcd member (the first never
got it, or had no leader: EtcdStore._rpc). The margin is a request's whole deadline in etcd
(REQUEST_TIMEOUT_S, which the member is given with it) and STALL_S: a request worker 0 sent
is over (answered, or past its deadline in the member) before its sender gives up, so a
sender reports "outcome unknown" no earlier than a lone Txn's caller would. It does so only
at its give-up time, or once worker 0 closed the connection (it takes nothing more in from
it, and drops what it had queued). A worker that closes waits for its sent commits' answers
(`SharedCommits.close`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack

from storage.errors import StorageError, StorageFull
from storage.metadata import Item, Txn
from storage.metadata.etcd_batch import MAX_REQUEST_BYTES, NotSent, Wanted
from storage.metadata.etcd_grpc import CHANNEL_OPTIONS, REQUEST_TIMEOUT_S

log = logging.getLogger("tessera.metadata.etcd")

# a commit's own Txn: the same call on either side (`TxnBatcher.run`)
Run = Callable[[Txn, tuple[bytes, ...]], Awaitable[tuple[bool, dict[bytes, Item | None]]]]
# worker 0's batcher (`TxnBatcher.run`): as Run, and whether the commit is still wanted
Serve = Callable[[Txn, tuple[bytes, ...], Wanted],
                 Awaitable[tuple[bool, dict[bytes, Item | None]]]]

# in the workers' run directory, whose path `gateway.__main__._run_parent` keeps short
# enough for "w<N>.sock" (108 bytes a Unix socket path): a name no longer than those
SOCKET_NAME = "txn.sock"
HEAD = struct.Struct("<I")  # each frame: its length, then msgpack
# a commit's frame: any commit etcd takes fits (msgpack is no bigger than the TxnRequest,
# plus the frame's own few fields); a bigger one goes direct, where the batcher refuses it
MAX_FRAME = MAX_REQUEST_BYTES + 4096
# an answer's frame: what worker 0's Txn took from etcd (reads' values), as the worker's own
# Txn could have (grpc's receive limit)
MAX_ANSWER = dict(CHANNEL_OPTIONS)["grpc.max_receive_message_length"] + 4096
# worker 0 waits up to etcd's request timeout (10 s) per member it tries, a write that found
# no leader trying each of 3: a commit not answered within this fails (that commit alone)
FORWARD_TIMEOUT_S = 35.0
# room for a stall (a loaded host) between worker 0's check that a commit is still wanted
# (`TxnBatcher`) and its request's deadline starting (the same loop step: `EtcdStore._rpc`)
STALL_S = 1.0
PING_S = 5.0  # worker 0 answers a ping, and takes a frame in, within this, or is stuck
CHECK_S = 1.0  # while commits wait on worker 0, it is pinged this often
AWAY_S = 5.0  # after worker 0 could not be reached or did not answer: commits go direct


def give_up_margin() -> float:
    """How long before its sender's give-up time worker 0 sends a commit at the latest: the
    request's deadline in etcd then ends before the sender reports "outcome unknown"."""
    return REQUEST_TIMEOUT_S + STALL_S


def _pack(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return HEAD.pack(len(body)) + body


async def _frames(reader: asyncio.StreamReader, most: int):  # type: ignore[no-untyped-def]
    """Each frame's decoded object until the stream ends (or carries one over `most`)."""
    while True:
        try:
            (n,) = HEAD.unpack(await reader.readexactly(HEAD.size))
            if n > most:
                raise StorageError(f"commit frame of {n} bytes")
            body = await reader.readexactly(n)
        except asyncio.IncompleteReadError:
            return
        yield msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)


class _Out:
    """Frames written together: those produced in one loop turn go in one write."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._parts: list[bytes] = []

    def send(self, frame: bytes) -> None:
        if not self._parts:
            asyncio.get_running_loop().call_soon(self._flush)
        self._parts.append(frame)

    def _flush(self) -> None:
        parts, self._parts = self._parts, []
        if not self._writer.is_closing():
            self._writer.write(b"".join(parts))


class CommitServer:
    """Worker 0's side: runs every frame's commit through `run` (its batcher) and sends
    the answer back on the same connection."""

    def __init__(self, run: Serve) -> None:
        self._run = run
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.commits = 0  # commits other workers sent here (tests)

    async def start(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of an earlier worker 0
        self._server = await asyncio.start_unix_server(self._serve, str(path),
                                                       limit=MAX_FRAME + HEAD.size)
        os.chmod(path, 0o600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = _Out(writer)
        mine: set[asyncio.Task[None]] = set()
        try:
            async for frame in _frames(reader, MAX_FRAME):
                if frame == [0]:  # a ping (`SharedCommits._connect`): this loop runs
                    out.send(_pack([0]))
                    continue
                self.commits += 1
                task = asyncio.get_running_loop().create_task(self._one(writer, out, frame))
                self._tasks.add(task)
                mine.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(mine.discard)
        except (BrokenPipeError, ConnectionResetError) as exc:  # its sender closed it first
            log.debug("etcd commit sharing: a worker's connection closed: %s", exc)
        except (StorageError, OSError, ValueError) as exc:  # a peer that sends garbage
            log.warning("etcd commit sharing: dropping a worker's connection: %s", exc)
        finally:
            # closing: its commits not yet sent to etcd never will be (their `wanted`), one
            # in flight still applies
            writer.close()
            for task in mine:
                task.cancel()

    async def _one(self, writer: asyncio.StreamWriter, out: _Out, frame: list  # type: ignore[type-arg]
                   ) -> None:
        rid, compares, puts, deletes, reads, deadline, give_up = frame
        if time.monotonic() >= deadline:  # (CLOCK_MONOTONIC: one clock for every process)
            # taken in too late (this worker was paused): its sender may have stopped waiting
            # and told its caller it failed, so it is never sent; a sender still waiting
            # sends it itself
            out.send(_pack([rid, None, None, ["unsent", "taken in after its deadline"]]))
            return
        send_by = give_up - give_up_margin()

        def wanted() -> bool:
            """Its sender still waits for it: it reports "outcome unknown" at `give_up`, or
            once this worker closed the connection."""
            return not writer.is_closing() and time.monotonic() < send_by

        try:
            ok, seen = await self._run(Txn(compares, puts, tuple(deletes)), tuple(reads),
                                       wanted)
        except NotSent:  # its sender, if still waiting, sends it itself
            out.send(_pack([rid, None, None, ["unsent", "not sent within the margin before its give-up time"]]))
            return
        except StorageFull as exc:
            out.send(_pack([rid, None, None, ["full", str(exc)]]))
            return
        except Exception as exc:  # noqa: BLE001 - the caller's own error, as a lone Txn's
            out.send(_pack([rid, None, None, ["etcd", str(exc)]]))
            return
        out.send(_pack([rid, ok, [(k, None) if i is None else (k, i.value, i.revision)
                                  for k, i in seen.items()], None]))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:  # commits in flight: their answers (to live workers) still go out
            await asyncio.wait(list(self._tasks))


class _Gone(Exception):
    """The connection a commit was sent on is gone: why, and whether its caller waits first
    (worker 0 closed it: when)."""

    def __init__(self, why: str, wait: bool) -> None:
        super().__init__(why)
        self.wait = wait
        self.at = time.monotonic()


class _Link:
    """One connection to worker 0 and the commits waiting on it. `stale` says why new
    commits no longer go on it (a ping it left unanswered): the ones sent still wait for
    their answers, and it is closed once none does."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.out = _Out(writer)
        self.waiting: dict[int, asyncio.Future[list]] = {}  # type: ignore[type-arg]
        self.busy = asyncio.Event()  # set while commits wait on it
        self.pong: asyncio.Future[None] | None = None
        self.stale = ""
        self.closed = False  # by this side
        self.reading: asyncio.Task[None] | None = None
        self.watching: asyncio.Task[None] | None = None  # its pings (`SharedCommits._watch`)

    def fail(self, gone: _Gone, error: type[StorageError]) -> None:
        """Every commit waiting on it (and a ping) fails: `gone`."""
        waiting, self.waiting = self.waiting, {}
        self.busy.clear()
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(gone)
                answer.exception()  # retrieved here: its caller may have gone
        if (pong := self.pong) is not None and not pong.done():
            pong.set_exception(error(str(gone)))
            pong.exception()


class SharedCommits:
    """Another worker's side: `run` sends a commit to worker 0 at `path`, or, when that
    cannot be sent, runs it through `local` (this worker's own batcher)."""

    def __init__(self, path: Path, local: Run, error: type[StorageError]) -> None:
        self._path = path
        self._local = local
        self._error = error  # what an unknown outcome raises (EtcdError)
        self._link: _Link | None = None  # where new commits go
        self._links: set[_Link] = set()  # open: that one, and stale ones still waited on
        self._watching: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[bool] | None = None
        self._tried = False  # a connection was tried: the next ones go in the background
        self._next = 0  # (never reset: an old connection's answer never meets a new waiter)
        self._away_until = 0.0
        self._closing = False  # close() began: nothing more goes to worker 0
        self._sending = 0  # callers whose commit was sent to worker 0, not yet answered
        self._idle = asyncio.Event()  # set while none is
        self._idle.set()
        self.forwarded = 0  # commits sent to worker 0
        self.direct = 0  # commits sent to etcd while worker 0 could not be reached

    async def run(self, txn: Txn, reads: tuple[bytes, ...]
                  ) -> tuple[bool, dict[bytes, Item | None]]:
        link = self._link if await self._connected() else None
        if link is None:  # (also: connected, and broken again before this caller resumed)
            return await self._direct(txn, reads)
        rid = self._next = self._next + 1
        sent = time.monotonic()
        take_by = sent + PING_S
        frame = _pack([rid, txn.compares, txn.puts, list(txn.deletes), list(reads), take_by,
                       sent + FORWARD_TIMEOUT_S])
        if len(frame) - HEAD.size > MAX_FRAME:  # etcd takes or refuses it as this worker's
            return await self._direct(txn, reads)
        self._sending += 1
        self._idle.clear()
        try:
            return await self._forward(link, rid, frame, take_by, sent + FORWARD_TIMEOUT_S,
                                       txn, reads)
        finally:
            self._sending -= 1
            if not self._sending:
                self._idle.set()

    async def _forward(self, link: _Link, rid: int, frame: bytes, take_by: float,
                       give_up: float, txn: Txn, reads: tuple[bytes, ...]
                       ) -> tuple[bool, dict[bytes, Item | None]]:
        """Send `frame` on `link`: worker 0's answer, or this worker's own if worker 0
        answered "unsent"."""
        answer: asyncio.Future[list] = asyncio.get_running_loop().create_future()  # type: ignore[type-arg]
        link.waiting[rid] = answer
        link.busy.set()
        link.out.send(frame)
        self.forwarded += 1
        try:
            async with asyncio.timeout(FORWARD_TIMEOUT_S):
                _, ok, seen, err = await asyncio.shield(answer)
        except TimeoutError:  # worker 0 sent it, if at all, with a deadline over by now
            why = f" ({link.stale})" if link.stale else ""
            raise self._error("etcd commit sent through gateway worker 0: no answer within "
                              f"{FORWARD_TIMEOUT_S:.0f} s{why}; outcome unknown") from None
        except _Gone as gone:
            if gone.wait:  # worker 0 closed the connection: it takes nothing more in, nor
                # sends anything more; a request it sent is past its deadline in etcd by then
                until = max(take_by, min(give_up, gone.at + give_up_margin()))
                await asyncio.sleep(max(0.0, until - time.monotonic()))
            raise self._error(f"etcd commit sent through gateway worker 0: {gone}; "
                              "outcome unknown") from None
        finally:
            link.waiting.pop(rid, None)
            if not link.waiting:
                link.busy.clear()
                if link is not self._link:  # a stale connection, now waited on by none
                    self._close(link)
        if err is not None:
            kind, msg = err
            if kind == "unsent":  # refused unseen by etcd: sent once, by this worker
                return await self._direct(txn, reads)
            raise (StorageFull if kind == "full" else self._error)(msg)
        return ok, {k[0]: (None if len(k) == 2 else Item(k[0], k[1], k[2])) for k in seen}

    async def _direct(self, txn: Txn, reads: tuple[bytes, ...]
                      ) -> tuple[bool, dict[bytes, Item | None]]:
        self.direct += 1
        return await self._local(txn, reads)

    async def _connected(self) -> bool:
        if self._closing:
            return False
        if self._link is not None and not self._link.writer.is_closing():
            return True
        if time.monotonic() < self._away_until:
            return False
        if self._connecting is None:  # one attempt at a time
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(self._connected_or_not)
        if self._tried:  # a reconnection: commits go direct until it is done
            return False
        # the first attempt (a starting gateway): its callers wait for it
        return await asyncio.shield(self._connecting)

    def _connected_or_not(self, attempt: asyncio.Task[bool]) -> None:
        self._tried = True
        if self._connecting is attempt:
            self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # (none expected: retrieved, never logged as lost)

    async def _connect(self) -> bool:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self._path),
                                                                limit=MAX_ANSWER + HEAD.size)
        except OSError as exc:
            self._away_until = time.monotonic() + AWAY_S
            log.debug("etcd commit sharing: worker 0 not reachable (%s): committing directly",
                      exc)
            return False
        # a stopped (SIGSTOP) or stuck worker 0 still completes connects (the kernel's
        # backlog) but would hold every commit sent to it: it answers a ping first
        link = _Link(writer)
        self._links.add(link)
        link.reading = asyncio.get_running_loop().create_task(self._read(reader, link))
        ok = False
        try:
            ok = await self._pinged(link)
        finally:
            if not ok:
                self._close(link)
        if not ok:
            log.warning("etcd commit sharing: worker 0 did not answer within %.0f s; "
                        "committing directly for %.0f s", PING_S, AWAY_S)
            self._away_until = time.monotonic() + AWAY_S
            return False
        if self._closing:  # (a reconnection begun before close: its link is not used)
            self._close(link)
            return False
        self._link = link
        self._watching = link.watching = asyncio.get_running_loop().create_task(
            self._watch(link))
        return True

    async def _pinged(self, link: _Link) -> bool:
        """Whether worker 0 answers a ping on `link` within PING_S: its loop runs."""
        pong = link.pong = asyncio.get_running_loop().create_future()
        link.out.send(_pack([0]))
        try:
            async with asyncio.timeout(PING_S):
                await asyncio.shield(pong)
            return True
        except (TimeoutError, StorageError):
            return False
        finally:
            if link.pong is pong:
                link.pong = None

    async def _watch(self, link: _Link) -> None:
        """While commits wait on worker 0, ping it every CHECK_S: one stopped or stuck (or
        only slow) is left for the next commits within CHECK_S + PING_S."""
        while link is self._link:
            await link.busy.wait()
            if link is not self._link:
                return
            if not await self._pinged(link):
                if link is self._link:
                    self._leave(link, f"worker 0 did not answer a ping within {PING_S:.0f} s")
                return
            await asyncio.sleep(CHECK_S)

    def _leave(self, link: _Link, why: str) -> None:
        """New commits go direct for AWAY_S (`link` is stale); the ones sent on it still
        wait for their answers: worker 0 may only be slow, and one stopped that resumes
        sends none of them after their senders gave up."""
        log.warning("etcd commit sharing: %s; committing directly for %.0f s (%d sent wait "
                    "for their answers, %.0f s at most)", why, AWAY_S, len(link.waiting),
                    FORWARD_TIMEOUT_S)
        link.stale = why
        self._away_until = time.monotonic() + AWAY_S
        if self._link is link:
            self._link = None
        if not link.waiting:
            self._close(link)

    async def _read(self, reader: asyncio.StreamReader, link: _Link) -> None:
        unreadable = ""
        try:
            async for frame in _frames(reader, MAX_ANSWER):
                answer = link.pong if frame[0] == 0 else link.waiting.get(frame[0])
                if answer is not None and not answer.done():
                    answer.set_result(None if frame[0] == 0 else frame)
        except ConnectionResetError:
            pass
        except (StorageError, OSError, ValueError) as exc:
            unreadable = f"an unreadable answer from worker 0 ({exc})"
        if link.closed:  # closed by this side: its commits were dealt with then
            return
        if unreadable:  # worker 0 may still send the waiting ones: they wait their time
            if (pong := link.pong) is not None and not pong.done():
                pong.set_exception(self._error(unreadable))
                pong.exception()
            self._leave(link, unreadable)
            self._close(link)
            return
        # worker 0 closed it: it takes nothing more in from it, nor sends what it queued
        why = "worker 0 closed the connection"
        if self._link is link:
            log.warning("etcd commit sharing: %s; committing directly for %.0f s", why, AWAY_S)
            self._away_until = time.monotonic() + AWAY_S
        self._close(link)
        link.fail(_Gone(why, wait=True), self._error)

    def _close(self, link: _Link) -> None:
        """Close `link` from this side (its waiting commits, if any, are not touched)."""
        link.closed = True
        link.writer.close()
        if link.watching is not None and link.watching is not asyncio.current_task():
            link.watching.cancel()  # (else it waits on `busy` forever)
        self._links.discard(link)
        if self._link is link:
            self._link = None

    async def close(self) -> None:
        """New commits go direct; those sent to worker 0 get its answers first, each within
        its FORWARD_TIMEOUT_S (worker 0 may still send them to etcd: a caller told before
        could see its write apply after it was told). A gateway shutting down kills a worker
        still running 15 s after its SIGTERM: its callers then see a reset connection, no
        answer, which is as truthful."""
        self._closing = True  # nothing more goes to worker 0 (`_away_until` may be reset)
        self._link = None  # (the commits sent on it still wait for their answers)
        if self._sending:
            log.info("etcd commit sharing: closing: waiting for worker 0's answers to %d "
                     "commits", self._sending)
            with contextlib.suppress(TimeoutError):  # (each is answered or told by then)
                async with asyncio.timeout(FORWARD_TIMEOUT_S):
                    await self._idle.wait()
        links = list(self._links)
        for link in links:
            self._close(link)
            link.fail(_Gone("this worker is closing", wait=False), self._error)
        tasks = [self._connecting, self._watching, *(link.reading for link in links)]
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
