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
  Txn whose connection broke after it was sent: it may have applied. That is: the
  connection broke; worker 0 did not answer a ping within PING_S (stopped or stuck; while
  commits wait on it, it is pinged every CHECK_S), and the commit's take-in deadline passed
  (below); or no answer within FORWARD_TIMEOUT_S (that commit alone: worker 0 still answers
  pings, its etcd request is slow). Such a commit is never resent;
- a commit that is known not to have been sent goes straight to etcd through the worker's
  own batcher, so a worker keeps serving: worker 0 not listening (yet), gone, or stopped or
  stuck within AWAY_S (reconnections are tried in the background meanwhile); a frame over
  MAX_FRAME; or one worker 0 refused because it took it in after its take-in deadline.

Never taken in after its caller was told it failed: each frame carries its take-in deadline
(sent + PING_S, CLOCK_MONOTONIC: one clock for every process on the host); worker 0 refuses
a frame it takes in later ("unsent", never sent to etcd), and a sender that gave up on a
stopped worker 0 reports "outcome unknown" only once that deadline has passed. Nor sent to
etcd after: the frame also carries when its sender stops waiting (sent + FORWARD_TIMEOUT_S),
and worker 0 drops it then if still queued; a closed connection drops its queued ones. (One
worker 0 took in before it stopped, and that was in flight to etcd or still queued when it
resumes before seeing the connection closed, may still apply, as a lone Txn's may: etcd
evaluates its compares then.)
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
from storage.metadata.etcd_batch import MAX_REQUEST_BYTES
from storage.metadata.etcd_grpc import CHANNEL_OPTIONS

log = logging.getLogger("tessera.metadata.etcd")

# a commit's own Txn: the same call on either side (`TxnBatcher.run`)
Run = Callable[[Txn, tuple[bytes, ...]], Awaitable[tuple[bool, dict[bytes, Item | None]]]]

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
PING_S = 5.0  # worker 0 answers a ping, and takes a frame in, within this, or is stuck
CHECK_S = 1.0  # while commits wait on worker 0, it is pinged this often
AWAY_S = 5.0  # after worker 0 could not be reached or did not answer: commits go direct


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

    def __init__(self, run: Run) -> None:
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
                task = asyncio.get_running_loop().create_task(self._one(out, frame))
                self._tasks.add(task)
                mine.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(mine.discard)
        except (StorageError, OSError, ValueError) as exc:  # a peer that sends garbage
            log.warning("etcd commit sharing: dropping a worker's connection: %s", exc)
        finally:
            writer.close()
            # its sender gave up on them (or is gone): a commit not yet sent to etcd never
            # will be (`TxnBatcher.run` drops it when cancelled), one in flight still applies
            for task in mine:
                task.cancel()

    async def _one(self, out: _Out, frame: list) -> None:  # type: ignore[type-arg]
        rid, compares, puts, deletes, reads, deadline, give_up = frame
        if time.monotonic() >= deadline:  # (CLOCK_MONOTONIC: one clock for every process)
            # taken in too late (this worker was paused): its sender may have stopped waiting
            # and told its caller it failed, so it is never sent; a sender still waiting
            # sends it itself
            out.send(_pack([rid, None, None, ["unsent", "taken in after its deadline"]]))
            return
        try:
            # its sender stops waiting at `give_up` ("outcome unknown"): not sent to etcd by
            # then, it never will be (`TxnBatcher.run` drops it when cancelled); sent, it
            # still applies, as a lone Txn's may
            async with asyncio.timeout(max(0.0, give_up - time.monotonic())):
                ok, seen = await self._run(Txn(compares, puts, tuple(deletes)), tuple(reads))
        except TimeoutError:
            out.send(_pack([rid, None, None, ["etcd", "etcd commit sent through gateway worker "
                                              "0: no answer in time; outcome unknown"]]))
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
    """The connection a commit was sent on is gone: why, and whether worker 0 may still
    take the commit in (it was stopped or stuck, not closed)."""

    def __init__(self, why: str, stuck: bool) -> None:
        super().__init__(why)
        self.stuck = stuck


class SharedCommits:
    """Another worker's side: `run` sends a commit to worker 0 at `path`, or, when that
    cannot be sent, runs it through `local` (this worker's own batcher)."""

    def __init__(self, path: Path, local: Run, error: type[StorageError]) -> None:
        self._path = path
        self._local = local
        self._error = error  # what an unknown outcome raises (EtcdError)
        self._writer: asyncio.StreamWriter | None = None
        self._out: _Out | None = None
        self._reading: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[bool] | None = None
        self._tried = False  # a connection was tried: the next ones go in the background
        self._pong: asyncio.Future[None] | None = None
        self._pinging: asyncio.StreamWriter | None = None  # the connection being pinged
        self._waiting: dict[int, asyncio.Future[list]] = {}  # type: ignore[type-arg]
        self._busy = asyncio.Event()  # set while commits wait on worker 0
        self._next = 0
        self._away_until = 0.0
        self.forwarded = 0  # commits sent to worker 0
        self.direct = 0  # commits sent to etcd while worker 0 could not be reached

    async def run(self, txn: Txn, reads: tuple[bytes, ...]
                  ) -> tuple[bool, dict[bytes, Item | None]]:
        out = self._out if await self._connected() else None
        if out is None:  # (also: connected, and broken again before this caller resumed)
            return await self._direct(txn, reads)
        rid = self._next = self._next + 1
        sent = time.monotonic()
        take_by = sent + PING_S
        frame = _pack([rid, txn.compares, txn.puts, list(txn.deletes), list(reads), take_by,
                       sent + FORWARD_TIMEOUT_S])
        if len(frame) - HEAD.size > MAX_FRAME:  # etcd takes or refuses it as this worker's
            return await self._direct(txn, reads)
        answer: asyncio.Future[list] = asyncio.get_running_loop().create_future()  # type: ignore[type-arg]
        self._waiting[rid] = answer
        self._busy.set()
        out.send(frame)
        self.forwarded += 1
        try:
            async with asyncio.timeout(FORWARD_TIMEOUT_S):
                _, ok, seen, err = await asyncio.shield(answer)
        except TimeoutError:  # worker 0 answers pings (else _Gone): its etcd request is slow
            raise self._error("etcd commit sent through gateway worker 0: no answer within "
                              f"{FORWARD_TIMEOUT_S:.0f} s; outcome unknown") from None
        except _Gone as gone:
            if gone.stuck:  # a stopped worker 0 that resumes must not take it in after this
                await asyncio.sleep(max(0.0, take_by - time.monotonic()))
            raise self._error(f"etcd commit sent through gateway worker 0: {gone}; "
                              "outcome unknown") from None
        finally:
            self._waiting.pop(rid, None)
            if not self._waiting:
                self._busy.clear()
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
        if self._writer is not None and not self._writer.is_closing():
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
        self._pinging = writer
        self._reading = asyncio.get_running_loop().create_task(self._read(reader, writer))
        out = _Out(writer)
        ok = False
        try:
            ok = await self._pinged(out)
        finally:
            self._pinging = None
            if not ok:
                writer.close()
        if not ok:
            log.warning("etcd commit sharing: worker 0 did not answer within %.0f s; "
                        "committing directly for %.0f s", PING_S, AWAY_S)
            self._away_until = time.monotonic() + AWAY_S
            return False
        self._writer, self._out = writer, out
        self._watching = asyncio.get_running_loop().create_task(self._watch(writer, out))
        return True

    async def _pinged(self, out: _Out) -> bool:
        """Whether worker 0 answers a ping on `out` within PING_S: its loop runs."""
        pong = self._pong = asyncio.get_running_loop().create_future()
        out.send(_pack([0]))
        try:
            async with asyncio.timeout(PING_S):
                await asyncio.shield(pong)
            return True
        except (TimeoutError, StorageError):
            return False
        finally:
            if self._pong is pong:
                self._pong = None

    async def _watch(self, writer: asyncio.StreamWriter, out: _Out) -> None:
        """While commits wait on worker 0, ping it every CHECK_S: one stopped or stuck is
        left (the waiting commits fail, the next go direct) within CHECK_S + PING_S."""
        while self._writer is writer:
            await self._busy.wait()
            if self._writer is not writer:
                return
            if not await self._pinged(out):
                if self._writer is writer:
                    self._broken(f"worker 0 did not answer a ping within {PING_S:.0f} s",
                                 stuck=True)
                return
            await asyncio.sleep(CHECK_S)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        why = "worker 0 closed the connection"
        try:
            async for frame in _frames(reader, MAX_ANSWER):
                answer = self._pong if frame[0] == 0 else self._waiting.get(frame[0])
                if answer is not None and not answer.done():
                    answer.set_result(None if frame[0] == 0 else frame)
        except (StorageError, OSError, ValueError) as exc:
            why = str(exc)
        if self._writer is writer:
            self._broken(why, stuck=False)
        elif self._pinging is writer and (pong := self._pong) and not pong.done():
            pong.set_exception(self._error(why))
            pong.exception()

    def _broken(self, why: str, stuck: bool) -> None:
        """Worker 0 is gone or stuck: commits go direct for AWAY_S."""
        log.warning("etcd commit sharing: %s; committing directly for %.0f s", why, AWAY_S)
        self._away_until = time.monotonic() + AWAY_S
        self._drop(why, stuck)

    def _drop(self, why: str, stuck: bool) -> None:
        """Close the connection: every commit waiting on it has an unknown outcome."""
        if self._writer is not None:
            self._writer.close()
        self._writer = self._out = None
        watching, self._watching = self._watching, None
        if watching is not None and watching is not asyncio.current_task():
            watching.cancel()
        waiting, self._waiting = self._waiting, {}
        self._busy.clear()
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(_Gone(why, stuck))
                answer.exception()  # retrieved here: its caller may have gone

    async def close(self) -> None:
        self._away_until = float("inf")  # nothing more goes to worker 0
        watching = self._watching
        self._drop("this worker is closing", stuck=False)
        for task in (self._connecting, self._reading, watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
