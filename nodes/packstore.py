"""One disk's packs (issue 17): whole shards appended as records (`nodes.packformat`) to
`<root>/packs/<seq:016x>.pack`, made durable by a group commit, found through an in-memory
index that a restart rebuilds by scanning the packs.

Why: a shard file costs a new inode, a directory entry and two fsyncs; a record appended to
an open pack costs a share of one fdatasync (report small17 measured 0.375-0.45 against
0.10-0.18 ms of CPU per 256 KiB shard, and none of ext4's inode-allocation stalls).

- **Group commit.** One committer thread per store takes every request pending, decides
  each (a PUT of an id already held: same bytes -> UNCHANGED, other bytes -> ShardExists
  unless `replace`), writes all their records with one pwritev and makes them durable with
  one fdatasync. Only then does the index change and do the callers' futures resolve: a
  shard is never acknowledged before its bytes are on disk. A failed write or sync fails the
  whole group and cuts the pack back to where the group began (if even that fails the pack
  is left and a new one started; a restart's scan sees what was really written).
- **Index.** shard id -> `PackLoc` (pack, body offset, length, write time) of its newest
  PUT, a TOMBSTONE removing it (`nodes.packindex`: sorted arrays plus recent changes);
  live bytes are counted per pack for compaction.
- **Restart.** Packs are indexed in order, each as `nodes.packrecovery` finds it (a sealed
  pack's footer, else a scan; a torn tail copied to `quarantine/`, then cut off). Damage
  inside a pack (`gaps`, `bad` records) is kept in `damage` for scrub, and so is a pack
  that is gone though compaction never dropped it (`nodes.packdrops`); indexing a pack and
  that bookkeeping: `nodes.packrestart`.
- A new pack is fsynced with its directory once, not once per shard. Packs are sealed (no
  more appends) at `seal_bytes`, ending with a footer listing their records: a restart
  reads that, and scans only packs without one that checks (the active pack, a damaged
  footer, a pack sealed by a failed write).
- **Compaction.** A sealed pack whose live bytes fall below `compact_ratio` of its size is
  copied forward by the committer itself, between groups, a step at a time
  (`nodes.packsteps`; when and how fast: `nodes.packcompact`).
- **Holes.** The bodies of dead PUT records in every pack, the active one included, are given back in place
  (`nodes.packpunch`, after each compaction run), their heads and trailers kept.
- **fds.** The committer keeps the active pack's fd and at most `FD_CACHE` others (LRU);
  readers open a pack by path and close it: a node's fds do not grow with its packs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nodes import packformat as pf
from nodes.packdrops import Drops
from nodes.packindex import PackIndex, PackLoc
from nodes.packpunch import PackPunching
from nodes.packrecovery import PACK_NAME, Damage, pack_name
from nodes.packreserve import RESERVE_NAME, Reserve, is_disk_full
from nodes.packrestart import PackRestart
from nodes.packsteps import PackCompaction, StepJob
from nodes.packunsure import Unsure
from nodes.shardfile import (
    UNCHANGED,
    ShardExists,
    check_shard_id,
    fsync_dir,
    read_exact,
    writev_all,
)

log = logging.getLogger(__name__)

SEAL_BYTES = 256 * 1024 * 1024
COMPACT_RATIO = 0.5
FD_CACHE = 16  # sealed packs' fds the committer keeps open (compaction, same-bytes checks)
RELEASE_ROUNDS = 2  # pieces of the reserve one reclaiming write may give up (`_append`)
@dataclass
class _Request:
    kind: int
    sid: str
    body: list[bytes | memoryview]
    replace: bool
    future: concurrent.futures.Future[int]
    length: int = 0
    expect: PackLoc | None = None  # a TOMBSTONE only while the shard is still there


class PackStore(PackCompaction, PackPunching, PackRestart):
    """The packs below `root` (`open` before use, `close` after)."""

    def __init__(self, root: Path | str, seal_bytes: int = SEAL_BYTES,
                 compact_ratio: float = COMPACT_RATIO,
                 reserve_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.pack_dir = self.root / "packs"
        self.quarantine_dir = self.root / "quarantine"
        self.seal_bytes = seal_bytes
        self.compact_ratio = compact_ratio
        # kept back for tombstones and compaction (`nodes.packreserve`); by default a whole
        # pack, the most one compaction candidate's needed records can be
        self.reserve = Reserve(self.pack_dir / RESERVE_NAME,
                               seal_bytes if reserve_bytes is None else reserve_bytes)
        self.index = PackIndex()  # sorted and compact: ~43 B a shard once merged
        self.live: dict[int, int] = {}  # seq -> bytes of its live records (with overhead)
        self.sizes: dict[int, int] = {}  # seq -> bytes written (durable)
        self.held_bytes = 0  # the bodies of the shards the index holds (their live bytes)
        self.damage: list[Damage] = []  # replaced whole, under `_damage_lock` once started
        self._damage_lock = threading.Lock()  # its (and `missing`'s) rewrites: the committer
        # (compaction's `_drop`) and an ack (`acknowledge_lost`, a worker thread): review22e L6
        self.drops = Drops(self.pack_dir)  # packs compaction dropped: others gone are lost
        self.missing: list[int] = []  # packs a restart found lost (in `damage` too)
        self._unlinked: set[int] = set()  # packs unlinked, their directory not yet fsynced
        self._retired: set[int] = set()  # never appended to again: sealed, or left by a
        # failed cut-back
        self._unsure: dict[int, int] = {}  # seq -> where a group whose cut-back failed began:
        # its records are never indexed, yet a restart's scan applies them (never punched)
        self.unsure = Unsure(self.pack_dir)  # those starts, kept across a restart (H1)
        self.syncs = 0  # fdatasyncs done by the committer (group commit's measure)
        self.compacted = 0  # packs compaction removed
        self.punch_off = False  # the file system cannot punch holes (`nodes.packpunch`)
        self.holes: dict[int, int] = {}  # seq -> bytes its punched holes gave back
        self.punched = 0  # bytes punching gave back
        self._punched_dead: dict[int, int] = {}  # seq -> its dead bytes when last punched
        self.skipped = 0  # candidates compaction left: their records did not fit the disk
        self.footers_written = 0  # sealed packs given a footer
        self.footers_read = 0  # packs a restart indexed from their footer, not a scan
        self._active_recs: list[pf.Record] = []  # the active pack's records (its footer)
        self.hook: Callable[[str, int], None] | None = None  # tests: crash points by name
        # seq -> open fd (read-write), least recently used first: the active pack's and at
        # most FD_CACHE others (a node with thousands of packs holds a few fds, not one each)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._fd_lock = threading.Lock()  # `close` and the committer
        self._active = -1
        self._floor = 0  # new packs are numbered above it (`Drops.floor`, unsure marks)
        self._active_of_last = -1  # the pack `_append` last wrote to
        self._pending: list[_Request] = []
        self._jobs: list[StepJob] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- start and stop ------------------------------------------------------------------

    def open(self) -> None:
        """Scan every pack, rebuild the index, set torn tails aside; start the committer."""
        for d in (self.root, self.pack_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.reserve.open()  # a disk too full for it: PUTs wait until space is freed
        seqs = sorted(int(m.group(1), 16) for n in os.listdir(self.pack_dir)
                      if (m := PACK_NAME.match(n)))
        self.missing = self.drops.open(seqs)
        self.damage += [Damage(seq, missing=True) for seq in self.missing]
        marks = self.unsure.load()
        last: list[pf.Record] | None = None
        with self.index.bulk():
            for seq in seqs:
                last = self._recover(seq, marks.get(seq))
        floor = self.drops.floor
        try:
            self.unsure.clear()
        except OSError as exc:  # a full or failing disk still starts; a mark left on a
            log.warning("pack unsure record %s not cleared (%s)", self.unsure.path, exc)
            floor = max([floor, *marks])  # number a new pack took would cut it next open
        self._floor = max(floor, self.drops.highest)  # a lost newest pack's number stays
        # a gap (reported), never taken again (`nodes.packdrops`)
        if seqs and seqs[-1] <= floor:  # the newest pack is appended to no more either
            self._retired.add(seqs[-1])
        newest = seqs[-1] if seqs else 0
        for d in self.damage:
            d.lost_end = d.torn is not None and d.seq != newest
        if seqs and last is not None and self.sizes[seqs[-1]] < self.seal_bytes:
            self._active = seqs[-1]  # appends go on after its last record
            self._active_recs = last
        else:
            if seqs and last is not None:  # full, but the crash came before its seal: the
                self._active, self._active_recs = seqs[-1], last  # footer now, or every
                self._seal(seqs[-1])  # restart would scan it again
                with self._fd_lock:  # a sealed pack's fd is not kept (see `_recover`)
                    fd = self._fds.pop(seqs[-1], None)
                if fd is not None:
                    os.close(fd)
            self._new_pack(seqs[-1] + 1 if seqs else 1)
        self._thread = threading.Thread(target=self._run, name="pack-commit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the committer after the requests already queued; close every fd."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, seq: int) -> int:
        """An fd open on pack `seq` (the committer's, or `open`'s before it starts): kept in
        a small LRU; the one it pushes out is never the active pack's, and is closed only
        here, in the committer, which is done with it (every use reads at once)."""
        with self._fd_lock:
            fd = self._fds.get(seq)
            if fd is not None:
                self._fds.move_to_end(seq)
                return fd
            fd = os.open(self.pack_dir / pack_name(seq), os.O_RDWR | os.O_CLOEXEC)
            self._fds[seq] = fd
            self._trim_fds()
        return fd

    def _trim_fds(self) -> None:
        """Close the least recently used fds beyond FD_CACHE (never the active pack's)."""
        while len(self._fds) > FD_CACHE + 1:
            old = next((s for s in self._fds if s != self._active), None)
            if old is None:
                return
            os.close(self._fds.pop(old))

    def _new_pack(self, seq: int) -> None:
        """Create pack `seq` (empty, durable) and make it the active one. One that fails to
        be made durable is removed again: else its name would stay taken (O_EXCL) and every
        later try fail until a restart."""
        seq = max(seq, self._floor + 1)
        path = self.pack_dir / pack_name(seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fsync(fd)
            fsync_dir(self.pack_dir)  # once per pack, not once per shard
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        try:  # after it is durable: a crash between leaves a pack above the mark, not a gap
            self.drops.made(seq)
        except OSError as exc:  # its loss as the newest pack is then not seen: logged only
            log.warning("pack %d: highest pack record not written (%s)", seq, exc)
        with self._fd_lock:
            self._fds[seq] = fd
            self._active = seq
            self._trim_fds()
        self.sizes[seq] = 0
        self.live[seq] = 0
        self._active_recs = []

    def _seal(self, seq: int) -> None:
        """End the full active pack with its footer (durable), so a restart need not scan
        it. A failed write only costs that scan: the pack is cut back and sealed anyway."""
        fd, start = self._fd(seq), self.sizes[seq]
        footer = pf.encode_footer(self._active_recs, start, time.time_ns())
        try:
            writev_all(fd, [footer], start)
            self._hook("footer", seq)
            os.fdatasync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self._retired.add(seq)
            return
        self.sizes[seq] = start + len(footer)
        self.footers_written += 1
        self._retired.add(seq)  # a new pack that fails to open must not seal it again
        self._hook("sealed", seq)

    # -- the index -----------------------------------------------------------------------

    def _apply(self, seq: int, rec: pf.Record) -> None:
        """Make `rec` (durable in pack `seq`) the newest word on its shard."""
        if rec.kind == pf.FOOTER:
            return
        sid = rec.shard_id
        old = self.index.get(sid)
        if old is not None:
            self.live[old.seq] -= old.length + pf.OVERHEAD
            self.held_bytes -= old.length
        if rec.kind == pf.PUT:  # one assignment: a reader never finds it absent meanwhile
            self.index[sid] = PackLoc(seq, rec.body_offset, rec.body_len, rec.time_ns)
            self.live[seq] = self.live.get(seq, 0) + rec.body_len + pf.OVERHEAD
            self.held_bytes += rec.body_len
        elif old is not None:
            del self.index[sid]

    def locate(self, sid: str) -> PackLoc | None:
        return self.index.get(sid)

    def disk_bytes(self) -> int:
        """The packs' size on disk: live shards, and what compaction and hole punching have
        not yet reclaimed (deleted and replaced records, tombstones, heads and footers)."""
        return sum(self.sizes.values()) - sum(self.holes.values())

    def path_of(self, seq: int) -> Path:
        return self.pack_dir / pack_name(seq)

    def read(self, loc: PackLoc, start: int = 0, n: int | None = None) -> bytes:
        """Bytes [start, start+n) of a located shard's body (blocking: a worker thread).
        It opens the pack itself: compaction may close the committer's fd and unlink the
        pack at any time (FileNotFoundError then: the shard has moved or gone)."""
        n = loc.length - start if n is None else min(n, loc.length - start)
        fd = os.open(self.path_of(loc.seq), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return read_exact(fd, max(n, 0), loc.offset + start)
        finally:
            os.close(fd)

    def _read_held(self, loc: PackLoc) -> bytes:
        """A located body read by the committer (its fds stay open while it runs)."""
        return read_exact(self._fd(loc.seq), loc.length, loc.offset)

    # -- writing -------------------------------------------------------------------------

    async def put(self, sid: str, body: list[bytes | memoryview], *,
                  replace: bool = False) -> int:
        """Store a whole shard durably: the size it replaced, -1 when new, or UNCHANGED."""
        check_shard_id(sid)
        return await self._submit(pf.PUT, sid, body, replace)

    async def delete(self, sid: str, expect: PackLoc | None = None) -> bool:
        """Remove a shard (a durable TOMBSTONE); False when no pack holds it, or with
        `expect`, when the shard is no longer that record (decided in the committer: a
        quarantine never deletes a copy written after its bad read)."""
        check_shard_id(sid)
        return await self._submit(pf.TOMBSTONE, sid, [], False, expect) >= 0

    def delete_sync(self, sid: str, expect: PackLoc | None = None) -> bool:
        """`delete` from a worker thread (blocking until the tombstone is durable): a shard
        file's commit superseding a packed copy (`DiskShardStore.supersede_packed_sync`)."""
        check_shard_id(sid)
        return self._enqueue(pf.TOMBSTONE, sid, [], False, expect).result() >= 0

    async def _submit(self, kind: int, sid: str, body: list[bytes | memoryview],
                      replace: bool, expect: PackLoc | None = None) -> int:
        return await asyncio.wrap_future(self._enqueue(kind, sid, body, replace, expect))

    def _enqueue(self, kind: int, sid: str, body: list[bytes | memoryview],
                 replace: bool, expect: PackLoc | None) -> concurrent.futures.Future[int]:
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        req = _Request(kind, sid, body, replace, fut, sum(len(p) for p in body), expect)
        with self._cond:
            if self._closing:
                raise RuntimeError("pack store is closed")
            self._pending.append(req)
            self._cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    wait = self._job_wait()
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                batch, self._pending = self._pending, []
                if not batch and self._closing:
                    for job in self._jobs:  # a compaction left half done is safe
                        if job.started:
                            job.future.set_exception(RuntimeError("pack store closed"))
                        else:
                            job.future.cancel()
                    return
            if not batch:
                self._job_step()
                continue
            # A caller that gave up (its task cancelled) before now is left out: nothing
            # written for it. From here on a cancel no longer reaches the future, so its
            # answer can always be set (the write itself goes on, as a file's would).
            batch = [req for req in batch if req.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                self._commit(batch)
            except BaseException as exc:  # a bug here must not leave callers waiting
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(exc)

    def _hook(self, point: str, seq: int) -> None:
        if self.hook is not None:
            self.hook(point, seq)

    # -- group commit --------------------------------------------------------------------

    def _commit(self, batch: list[_Request]) -> None:
        """Decide, write, fdatasync and index one group; then answer every request in it."""
        answers: list[tuple[_Request, int | BaseException]] = []
        writes: list[tuple[_Request, int]] = []  # request, answer once durable
        pending: dict[str, _Request] = {}  # ids written by this group so far
        riders: list[tuple[_Request, _Request]] = []  # nothing to write, given a write before
        for req in batch:
            try:
                answer = self._decide(req, pending)
            except Exception as exc:  # noqa: BLE001 - handed to the request's caller
                answers.append((req, exc))
                continue
            if answer is None and req.sid in pending:  # e.g. the same PUT twice: it holds
                riders.append((req, pending[req.sid]))  # only if that write does
            elif answer is None:
                answers.append((req, UNCHANGED if req.kind == pf.PUT else -1))
            else:
                writes.append((req, answer))
                pending[req.sid] = req
        if writes and any(req.kind == pf.PUT for req, _ in writes) and not self._room_for_puts():
            full = OSError(errno.ENOSPC, "disk full: space kept back for deletes")
            answers += [(req, full) for req, _ in writes if req.kind == pf.PUT]
            writes = [(req, a) for req, a in writes if req.kind != pf.PUT]
        if writes:
            try:
                self._write(writes)
            except Exception as exc:  # noqa: BLE001 - every write of the group failed
                answers += self._tombstones_anyway(writes, exc)
            else:
                answers += writes
        if riders:
            failed = {id(req): res for req, res in answers if isinstance(res, BaseException)}
            answers += [(req, failed.get(id(prior), UNCHANGED if req.kind == pf.PUT else -1))
                        for req, prior in riders]
        for req, result in answers:  # after the fdatasync: the answers may go out
            if isinstance(result, BaseException):
                req.future.set_exception(result)
            else:
                req.future.set_result(result)

    def _decide(self, req: _Request, pending: dict[str, _Request]) -> int | None:
        """What writing `req` would answer, or None when nothing is to be written."""
        prior = pending.get(req.sid)
        held = self.index.get(req.sid)
        if req.kind == pf.TOMBSTONE:
            if req.expect is not None and (prior is not None or held != req.expect):
                return None
            if prior is not None:
                return 0 if prior.kind == pf.PUT else None
            return None if held is None else 0
        if prior is not None and prior.kind == pf.PUT:
            if req.replace:
                return prior.length
            if _same(b"".join(prior.body), req.body):
                return None
            raise ShardExists(req.sid)
        if held is None or (prior is not None and prior.kind == pf.TOMBSTONE):
            return -1
        if req.replace:
            return held.length
        if held.length == req.length and _same(self._read_held(held), req.body):
            return None
        raise ShardExists(req.sid)

    def _room_for_puts(self) -> bool:
        """Whether PUTs may write: the reserve is held, or could be taken back now (a disk
        error here is left to the write itself to meet and answer)."""
        try:
            return self.reserve.arm()
        except OSError:
            return True

    def _tombstones_anyway(self, writes: list[tuple[_Request, int]], exc: Exception
                           ) -> list[tuple[_Request, int | BaseException]]:
        """A group that failed: every request's answer is `exc`, but on a full disk its
        tombstones are written again alone, from the reserve (freeing space takes space)."""
        tombs = [(req, a) for req, a in writes if req.kind == pf.TOMBSTONE]
        failed: list[tuple[_Request, int | BaseException]] = [
            (req, exc) for req, _ in writes if not (is_disk_full(exc) and req.kind == pf.TOMBSTONE)]
        if not is_disk_full(exc) or not tombs:
            return failed
        try:
            self._write(tombs, reclaim=True)
        except Exception as again:  # noqa: BLE001 - the tombstones failed too
            return failed + [(req, again) for req, _ in tombs]
        return failed + list(tombs)

    def _write(self, writes: list[tuple[_Request, int]], reclaim: bool = False) -> None:
        now = time.time_ns()
        items = []
        for req, _ in writes:
            stripe, index = check_shard_id(req.sid)
            items.append((req.kind, stripe, index, now, req.body))
        for rec in self._append(items, reclaim):
            self._apply(self._active_of_last, rec)

    def _append(self, items: list[tuple[int, bytes, int, int, list[bytes | memoryview]]],
                reclaim: bool = False) -> list[pf.Record]:
        """`_append_once`; when it finds the disk full and the records free space (`reclaim`:
        tombstones, a compaction step), again after giving up as much of the reserve as
        they need, at most `RELEASE_ROUNDS` times: a disk that freeing blocks does not cure
        (another writer takes each piece, no inodes left) fails this write (507), not
        drains the whole reserve one piece per failed write."""
        need = sum(pf.OVERHEAD + sum(len(p) for p in body) for *_, body in items)
        rounds = 0
        while True:
            try:
                return self._append_once(items)
            except OSError as exc:
                if not (reclaim and is_disk_full(exc) and rounds < RELEASE_ROUNDS
                        and self.reserve.release(need)):
                    raise
                rounds += 1

    def _append_once(self, items: list[tuple[int, bytes, int, int, list[bytes | memoryview]]]
                     ) -> list[pf.Record]:
        """Write records (kind, stripe, index, time, body) to the active pack with one
        pwritev and make them durable with one fdatasync (cut back on failure); the records
        written, all in pack `_active_of_last`."""
        if self._active in self._retired:
            self._new_pack(self._active + 1)
        elif self.sizes[self._active] >= self.seal_bytes:
            self._seal(self._active)
            self._new_pack(self._active + 1)
        seq, fd = self._active, self._fd(self._active)
        start = self.sizes[seq]
        parts: list[bytes | memoryview] = []
        recs: list[pf.Record] = []
        off = start
        for kind, stripe, index, time_ns, body in items:
            rec = pf.Record(kind, stripe, index, time_ns, off, sum(len(p) for p in body))
            parts += pf.encode(kind, stripe, index, time_ns, body)
            recs.append(rec)
            off = rec.end
        try:
            writev_all(fd, parts, start)
            self._hook("written", seq)
            os.fdatasync(fd)
            self.syncs += 1
        except BaseException:
            self._cut_back(seq, fd, start, off, recs)
            raise
        self.sizes[seq] = off
        self._active_of_last = seq
        self._active_recs += recs
        return recs

    def _cut_back(self, seq: int, fd: int, start: int, end: int,
                  recs: list[pf.Record]) -> None:
        """Undo a failed group: truncate to where it began; failing that, retire the pack
        (it is scanned as it really is at the next restart) and write on in a new one."""
        try:
            os.ftruncate(fd, start)
            os.fdatasync(fd)
        except OSError:
            self._retired.add(seq)  # never appended to again; its size is what it holds
            self._unsure[seq] = start
            try:  # before anything is written on: a restart must not index this group
                self.unsure.add(seq, start, end, recs)
            except OSError as exc:
                log.error("pack %d: failed group at %d not recorded (%s): a restart will "
                          "index it", seq, start, exc)
            with contextlib.suppress(OSError):
                self.sizes[seq] = os.fstat(fd).st_size
            with contextlib.suppress(OSError):
                self._new_pack(seq + 1)


def _same(held: bytes, body: list[bytes | memoryview]) -> bool:
    return hmac.compare_digest(held, b"".join(body))
