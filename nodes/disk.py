"""A node's local shard storage: whole shards up to [packs] max_shard_bytes appended to packs
(`nodes.packstore`), larger ones (and those from before packing) one file per shard, written
durably, read and verified in pieces (one file's format, write and read are in `nodes.shardfile`).

Layout below the node's data directory:

    shards/<id[0:2]>/<id[2:4]>/<id>      committed shard files (format v1, see `format`)
    tmp/<id>.<random>.tmp                 uploads in progress; older than an hour: removed at start
                                          (a whole shard committed at once has no name here:
                                          an O_TMPFILE file in its own directory, linked in)
    quarantine/<id>.<ns>[.json]           corrupt shards moved aside, with a JSON reason sidecar
                                          (`nodes.quarantine`)
    packs/<seq>.pack                      whole shards up to [packs] max_shard_bytes, appended
                                          (`nodes.packstore`; 1 MiB by default, 0: none)
    packs/reserve                         [packs] reserve_bytes (one pack by default) kept
                                          back for tombstones and compaction on a full disk
                                          (`nodes.packreserve`)
    packs/dropped                         the pack numbers compaction dropped: another gap
                                          below the newest pack is a lost pack (`nodes.packdrops`)

A shard is written to a temp file, fsynced, renamed into place and its directory fsynced (new
fan-out directories are made durable in their parent the first time; the 256 first-level ones
are made at start, all covered by one fsync of `shards/`, so a young node's shard makes at most
one directory, its leaf). Every blocking call runs
in a worker thread; no call holds more than about 1 MiB plus one frame in memory. Because every
frame but the last holds exactly `block_size` bytes, frame i sits at `header.frame_offset(i)`:
a range read seeks straight to it, and a damaged length field spoils one frame, not the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nodes.packreserve import is_disk_full
from nodes.packshadow import file_shadowed
from nodes.packstore import PackLoc, PackStore
from nodes.quarantine import ShardQuarantine
from nodes.shardfile import (
    UNCHANGED,
    FrameCheck,
    ShardExists,
    ShardLocation,
    check_shard_id,
    fsync_dir,
    in_thread,
    open_location,
    stat_file,
    verify_file,
)
from nodes.shardread import ShardReadStream
from nodes.shardwrite import ShardWriter
from storage.config import PackSettings, env_settings
from storage.errors import InvalidInput, NotFound, ShardCorrupt
from storage.filemodes import secure_tree, tighten
from storage.shards.ids import relative_path

_T = TypeVar("_T")
TEMP_MAX_AGE_S = 3600.0
FIRST_LEVEL = [f"{i:02x}" for i in range(256)]  # `shards/<id[0:2]>`: made at start (1 MiB)
RECENT_SHARDS = 16384  # shard ids remembered as hot (~2.5 MiB with the ids)


class RecentShards:
    """Ids of the shards this node committed or read lately (`ShardWriter.commit`, the GET
    handler), the oldest forgotten first: their directory entries are almost surely
    cached, so a read of one may open it on the event loop
    (`ShardReadStream.open_verified(hot=True)`)."""

    def __init__(self, size: int = RECENT_SHARDS) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def touch(self, sid: str) -> None:
        ids = self._ids
        ids[sid] = None
        ids.move_to_end(sid)
        if len(ids) > self._size:
            ids.popitem(last=False)

    def __contains__(self, sid: str) -> bool:
        return sid in self._ids


class DiskShardStore(ShardQuarantine):
    """The shard files of one node, below `root`."""

    def __init__(self, root: Path, temp_max_age_s: float = TEMP_MAX_AGE_S,
                 packs: PackSettings | None = None) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self._temp_max_age_s = temp_max_age_s
        self._durable_dirs: set[str] = set()  # str: hashing a Path costs ~10x more
        self._tmp_prefix = os.path.join(self.tmp_dir, "")  # strings: a Path per request costs
        self._shard_prefix = os.path.join(self.shard_dir, "")  # more than the join
        self._used_bytes = 0
        self._shards = 0
        self._counted = False
        self.recent = RecentShards()
        self.unnamed_temp = hasattr(os, "O_TMPFILE")  # whole shards written unnamed first
        # (`ShardWriter._commit_unnamed_sync`); cleared when the filesystem refuses it
        for d in (self.root, self.shard_dir, self.tmp_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings = packs or env_settings("packs")  # as `create_app`: defaults + environment
        self.pack_max = settings.max_shard_bytes  # 0: no new shard is packed
        self.packs: PackStore | None = None  # opened by `start` when packing is on or packs
        self._pack_seal = settings.seal_bytes  # written before are there to read
        self._pack_ratio = settings.compact_ratio
        self._pack_reserve = settings.reserve()

    # -- paths and bookkeeping ---------------------------------------------------------

    def packs_for(self, size: int) -> PackStore | None:
        """The packs a whole shard of `size` bytes is appended to, or None (a file)."""
        return self.packs if 0 < size <= self.pack_max else None

    def path_of(self, sid: str) -> Path:
        check_shard_id(sid)
        return self.shard_dir / relative_path(sid)

    def shard_path(self, sid: str) -> str:
        """`path_of` as a string, for a shard id the caller has already checked."""
        return f"{self._shard_prefix}{sid[0:2]}/{sid[2:4]}/{sid}"

    def locate(self, sid: str) -> ShardLocation:
        """Where the bytes of shard `sid` (an id the caller has checked) are read from: the
        one place every reader asks (`open_read`, `stat`, `verify`, batch reads)."""
        if self.packs is not None:
            loc = self.packs.locate(sid)
            if loc is not None:  # compaction may move it: a reader that finds the pack
                # gone asks again (`shardfile.open_location`)
                return ShardLocation(self.packs.path_of(loc.seq), loc.offset, loc.length,
                                     loc.time_ns / 1e9, lambda: self.locate(sid))
        return ShardLocation(self.shard_path(sid))

    def _make_dirs(self, leaf: Path | str) -> None:
        """Create the fan-out directories of `leaf`, fsyncing a parent once per new child."""
        leaf = os.fspath(leaf)
        if leaf in self._durable_dirs:  # its parent was made durable before it
            return
        for d in (os.path.dirname(leaf), leaf):
            if d in self._durable_dirs:
                continue
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            fsync_dir(os.path.dirname(d))
            self._durable_dirs.add(d)

    def _account(self, delta_bytes: int, delta_shards: int) -> None:
        self._used_bytes += delta_bytes
        self._shards += delta_shards

    async def start(self) -> None:
        """Remove stale temp files, make every file private (0600, directories 0700, in
        data dirs made before that rule too) and count what is stored (once, before serving;
        a shard file a whole packed copy shadows is removed then, `nodes.packshadow`)."""
        await asyncio.to_thread(secure_tree, self.root, [self.shard_dir])  # shards: in _count
        await asyncio.to_thread(self._clean_temp_sync, self._temp_max_age_s)
        await asyncio.to_thread(self._first_level_sync)
        await asyncio.to_thread(self._open_packs_sync)
        await self._count()

    def _open_packs_sync(self) -> None:
        """Open the packs (scan, index, torn tails aside) when packing is on, or when packs
        from a life with it on are there: their shards stay readable with it off."""
        pack_dir = self.root / "packs"
        if self.packs is not None or not (self.pack_max > 0 or (
                pack_dir.is_dir() and any(pack_dir.glob("*.pack")))):
            return
        packs = PackStore(self.root, self._pack_seal, self._pack_ratio, self._pack_reserve)
        packs.open()
        self.packs = packs

    async def close(self) -> None:
        """Stop the packs' committer (after the groups queued) and close their files."""
        packs, self.packs = self.packs, None
        if packs is not None:
            await asyncio.to_thread(packs.close)

    def _first_level_sync(self) -> None:
        """Make every first-level fan-out directory and one fsync of `shards/` cover all
        their entries (made now or in an earlier life that may have died before its own
        fsync): from here on they count as durable, and a new shard's commit makes and
        fsyncs at most its leaf directory and that leaf's parent. Best effort: a full or
        read-only disk must not keep the node from starting (it still serves what it holds,
        and space can be freed); a directory not made here is made, and fsynced, by the
        first commit under it, as before."""
        made = []
        for name in FIRST_LEVEL:
            d = f"{self._shard_prefix}{name}"
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            except OSError:  # ENOSPC, EROFS, EDQUOT...: left to the first commit under it
                continue
            made.append(d)
        try:
            fsync_dir(self.shard_dir)
        except OSError:
            return  # nothing counts as durable; commits fsync their own parents
        self._durable_dirs.update(made)

    async def clean_temp(self, max_age_s: float = TEMP_MAX_AGE_S) -> int:
        return await asyncio.to_thread(self._clean_temp_sync, max_age_s)

    def _clean_temp_sync(self, max_age_s: float) -> int:
        cutoff = time.time() - max_age_s
        removed = 0
        with os.scandir(self.tmp_dir) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False) and \
                            entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    async def _count(self) -> None:
        used, count = await asyncio.to_thread(self._count_sync)
        self._used_bytes, self._shards, self._counted = used, count, True

    def _count_sync(self) -> tuple[int, int]:
        used = count = 0
        for dirpath, _dirs, files in os.walk(self.shard_dir):
            with contextlib.suppress(FileNotFoundError):
                tighten(dirpath, os.stat(dirpath))
            dropped = False
            for name in files:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(path)
                    tighten(path, st)  # the walk that counts also keeps shards private
                    if not _valid(name):
                        continue
                    if file_shadowed(self, name, path):
                        dropped = True
                        continue
                    used += st.st_size
                    count += 1
            if dropped:
                with contextlib.suppress(OSError):  # best effort, as the unlink was; a
                    fsync_dir(dirpath)  # revived file only comes back to be dropped again
        if self.packs is not None:
            used += self.packs.held_bytes
            count += len(self.packs.index)
        return used, count

    # -- writing -------------------------------------------------------------------------

    async def begin_put(self, sid: str) -> ShardWriter:
        """Start an upload; the temp file is created with the first write (one thread hop
        for a small shard: open, write, fsync, rename and directory fsync together)."""
        check_shard_id(sid)
        tmp = f"{self._tmp_prefix}{sid}.{secrets.token_hex(6)}.tmp"
        return ShardWriter(self, sid, tmp, None, self.shard_path(sid))

    # -- reading -------------------------------------------------------------------------

    def open_read(self, sid: str, first: int = 0, count: int | None = None) -> ShardReadStream:
        """Header bytes, then frames [first, first+count) verified; see ShardReadStream."""
        check_shard_id(sid)
        return ShardReadStream(sid, self.locate(sid), first, count)

    async def stat(self, sid: str) -> dict[str, int | float]:
        check_shard_id(sid)
        return await asyncio.to_thread(self.stat_sync, sid)

    def stat_sync(self, sid: str) -> dict[str, int | float]:
        """`stat` without the thread hop, for callers already on a worker thread."""
        check_shard_id(sid)
        return self.unless_died(sid, lambda: stat_file(self.locate(sid), sid))

    async def verify(self, sid: str) -> FrameCheck:
        """The frames that fail their checks and the file read (ShardCorrupt if the header
        fails)."""
        check_shard_id(sid)
        return await asyncio.to_thread(lambda: verify_file(self.locate(sid), sid))

    # -- listing and removal -----------------------------------------------------------

    async def list(self, after: str = "", limit: int = 1000) -> list[str]:
        """Sorted shard ids greater than `after`, at most `limit` of them."""
        if limit <= 0:
            return []
        return await asyncio.to_thread(self._list_sync, after, limit)

    def _list_sync(self, after: str, limit: int) -> list[str]:
        files = self._list_files_sync(after, limit)
        if self.packs is None:
            return files
        packed = self.packs.index.after(after, limit)
        return sorted(set(files).union(packed))[:limit]

    def _list_files_sync(self, after: str, limit: int) -> list[str]:
        out: list[str] = []

        def subdirs(d: Path, prefix: str) -> list[str]:
            try:
                names = sorted(n for n in os.listdir(d) if len(n) == 2)
            except FileNotFoundError:
                return []
            keep = len(prefix) + 2
            return [n for n in names if prefix + n >= after[:keep]]

        for d1 in subdirs(self.shard_dir, ""):
            for d2 in subdirs(self.shard_dir / d1, d1):
                try:
                    names = sorted(os.listdir(self.shard_dir / d1 / d2))
                except FileNotFoundError:
                    continue
                for name in names:
                    if name > after and name.startswith(d1 + d2) and _valid(name):
                        out.append(name)
                        if len(out) >= limit:
                            return out
        return out

    async def delete(self, sid: str) -> bool:
        """Remove a shard; False when it was not there (a file's unlink is not fsynced: a
        revived delete is harmless, garbage collection repeats it; a packed shard's
        tombstone is durable like any record)."""
        path = self.path_of(sid)
        loc = self.packs.locate(sid) if self.packs is not None else None
        gone = False
        if loc is not None and self.packs is not None and await self.packs.delete(sid):
            self._account(-loc.length, -1)
            gone = True
        size = await asyncio.to_thread(self._unlink_sync, path)
        if size >= 0:
            self._account(-size, -1)
            gone = True
        return gone

    # -- the whole-shard commit rule, for a shard held as a file, a packed record or both --
    #
    # One rule, whichever way a PUT is written (packed: `put_packed`; a file: `ShardWriter`
    # and `smallio.put_many_sync`, whatever the size, mode or packing setting):
    # - a PUT that is no rewrite is decided by the copy reads are served from (the packed
    #   one when a pack holds the id, `locate`): same bytes -> UNCHANGED, nothing written;
    #   other bytes -> ShardExists (409);
    # - a rewrite (`replace`) makes its own copy durable first, then removes the other one
    #   durably (a packed copy: a TOMBSTONE, `supersede_packed_sync`; a file: `drop_file`),
    #   and only then is it acknowledged: reads and a restart find the new bytes, and a
    #   crash in between leaves the old copy or the new one, never neither.

    def packed_copy(self, sid: str) -> PackLoc | None:
        """The packed record of `sid` that reads are served from, or None."""
        packs = self.packs
        return packs.locate(sid) if packs is not None else None

    def decide_over_packed_sync(self, sid: str, same: Callable[[int, int, int], bool]
                                ) -> int | None:
        """A shard-file PUT that is no rewrite, of an id a pack holds: UNCHANGED when
        `same(fd, base, length)` (the new bytes against that range of the open pack) holds,
        else ShardExists; None when no pack holds the id any more (the file's own commit
        decides). Blocking: a worker thread."""
        try:
            fd, where = open_location(self.locate(sid), sid)
        except NotFound:
            return None
        try:
            if where.base == 0 or where.size is None:  # a file now: its commit decides
                return None
            if same(fd, where.base, where.size):
                return UNCHANGED
        finally:
            os.close(fd)
        raise ShardExists(sid)

    def supersede_packed_sync(self, sid: str, loc: PackLoc, replaced: int) -> int:
        """A rewrite's shard file is durable: tombstone the packed copy `loc` it replaces
        (durably, before the rewrite is acknowledged). `replaced` is `install_new`'s
        result, returned with the packed copy's size when the file was new. A packed copy
        written since `loc` (a later PUT) is left: it is the newer word. Blocking."""
        packs = self.packs
        if packs is None or not packs.delete_sync(sid, expect=loc):
            return replaced
        return loc.length if replaced == -1 else replaced

    async def put_packed(self, sid: str, parts: list[bytes | memoryview], *, replace: bool,
                         check: Callable[[], None] | None = None) -> int | None:
        """A whole shard appended to the disk's packs (`nodes.packstore`): `install_new`'s
        result once durable, or None (nothing written) when packing does not take this size,
        or a shard file holds the id already and this is no rewrite: the shard-file commit
        decides then, by the rule above (the packed copy, if any, else the file). A rewrite
        of a shard file removes the file once the packed copy is durable (never neither).
        `check` (the body's MAC) runs first, in the same worker-thread hop as the file
        probe. The one way a whole shard is packed: streamed PUTs and batches alike."""
        packs = self.packs_for(sum(len(p) for p in parts))
        if packs is None:
            return None
        path = self.shard_path(sid)

        def probe() -> bool:
            if check is not None:
                check()
            return os.path.exists(path)

        had_file = await in_thread(probe)
        if had_file and not replace:
            return None
        replaced = await packs.put(sid, parts, replace=replace)
        if had_file:
            size = await in_thread(lambda: self.drop_file(path))
            if replaced == -1 and size >= 0:
                replaced = size
        return replaced

    def drop_file(self, path: Path | str) -> int:
        """Remove a shard file a packed copy replaced (durably: its directory fsynced); its
        size, or -1 if it was gone (the commit accounts it as the size replaced). Blocking:
        a worker thread."""
        size = self._unlink_sync(Path(path))
        if size >= 0:
            fsync_dir(os.path.dirname(path))
        return size

    @staticmethod
    def _unlink_sync(path: Path) -> int:
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return -1
        return size

    def record_died(self, sid: str, read: tuple[int, ...] | None) -> bool:
        """Whether `read` (`shardfile.file_identity`: pack, inode and offset) names a packed
        record that is no longer the shard's (replaced or deleted since it was located):
        bytes that failed a check there may be punching's zeros (`nodes.packpunch`), so the
        shard is gone from there, not rotten (packs22: a read racing a punch)."""
        packs = self.packs
        if packs is None or read is None or len(read) != 3:
            return False
        loc = packs.locate(sid)
        if loc is None:
            return True
        try:
            st = os.stat(packs.path_of(loc.seq))
        except FileNotFoundError:  # compacted away since: moved, so not the record read
            return True
        return (st.st_dev, st.st_ino, loc.offset) != read

    def unless_died(self, sid: str, read: Callable[[], _T]) -> _T:
        """`read()` of `sid` (on a worker thread), answered as the single GET does
        (`shardget.open_get`) when its bytes fail a check in a packed record that died since
        it was located (a read racing a punch): read again once, where the shard is now,
        then NotFound. ShardCorrupt only for bytes still the shard's (rot)."""
        for _ in range(2):
            try:
                return read()
            except ShardCorrupt as exc:
                if not self.record_died(sid, exc.file):
                    raise
        raise NotFound(f"shard {sid} not found")

    async def usage(self) -> dict[str, int]:
        if not self._counted:
            await self._count()
        st = await asyncio.to_thread(os.statvfs, self.root)
        packs, disk = self.packs, self._used_bytes
        if packs is not None:  # packs hold deleted records until compaction: used_bytes
            disk += packs.disk_bytes() - packs.held_bytes  # counts live shards only
        reserve = None if packs is None else packs.reserve  # down: packed PUTs refused (507)
        return {"used_bytes": self._used_bytes, "disk_bytes": disk, "shards": self._shards,
                "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize,
                "reserve_bytes": 0 if reserve is None else reserve.held,
                "reserve_size": 0 if reserve is None else reserve.size,
                # packs with damage a restart found (`PackStore.damage`; a torn tail alone,
                # left by any crash mid-write, is not), and of those the packs gone though
                # compaction never dropped them (`nodes.packdrops`)
                "pack_damage": 0 if packs is None else len({d.seq for d in packs.damage
                                                            if d.harmful}),
                "packs_missing": 0 if packs is None else len(packs.missing)}


def _valid(name: str) -> bool:
    try:
        check_shard_id(name)
    except InvalidInput:
        return False
    return True


__all__ = ["DiskShardStore", "is_disk_full"]
