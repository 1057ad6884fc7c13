"""Quarantine of a node's corrupt shards: a shard whose bytes failed a check is moved (a file)
or copied then tombstoned (a packed record) to `quarantine/<id>.<ns>`, with a JSON sidecar saying
what, why and whence; the gateway's repair sweep lists them and rebuilds the shard elsewhere.
A mixin of `nodes.disk.DiskShardStore`, kept apart so that module stays one concept (split22).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nodes.packstore import PackLoc, PackStore
from nodes.shardfile import fsync_dir, read_exact, write_all


class ShardQuarantine:
    """Moving a `DiskShardStore`'s bad shards aside (it supplies the attributes below)."""

    root: Path
    quarantine_dir: Path
    packs: PackStore | None

    if TYPE_CHECKING:  # the store's own steps these use
        def path_of(self, sid: str) -> Path: ...
        def _account(self, delta_bytes: int, delta_shards: int) -> None: ...

    async def quarantine(self, sid: str, reason: str,
                         read: tuple[int, ...] | None = None) -> Path | None:
        """Move a shard aside with a JSON sidecar; return its new path (None if absent).
        `read` is the (st_dev, st_ino) of the file found bad: when the path holds another
        file by now (a repair put a good copy there), that file stays and None is returned."""
        path = self.path_of(sid)
        packs = self.packs
        loc = packs.locate(sid) if packs is not None else None
        if packs is not None and loc is not None:
            return await self._quarantine_packed(packs, sid, loc, reason, read)
        moved = await asyncio.to_thread(self._quarantine_sync, sid, path, reason, read)
        if moved is not None:
            self._account(-moved[1], -1)
            return moved[0]
        return None

    def _quarantine_sync(self, sid: str, path: Path, reason: str,
                         read: tuple[int, ...] | None) -> tuple[Path, int] | None:
        now = time.time()
        dest = self.quarantine_dir / f"{sid}.{time.time_ns()}"
        try:
            os.rename(path, dest)  # rename, then verify: no window where a new copy is lost
        except FileNotFoundError:
            return None
        st = os.stat(dest)
        if read is not None and (st.st_dev, st.st_ino) != read:
            self._put_back(dest, path)
            return None
        size = st.st_size
        _write_sidecar(dest, sid, reason, now, size, str(path.relative_to(self.root)))
        fsync_dir(self.quarantine_dir)
        fsync_dir(path.parent)
        return dest, size

    async def _quarantine_packed(self, packs: PackStore, sid: str, loc: PackLoc, reason: str,
                                 read: tuple[int, ...] | None) -> Path | None:
        """A packed shard's bytes copied to quarantine (durably, with its sidecar), then a
        tombstone. `read` names the record the bad bytes were read from (pack and offset):
        a copy put since (a repair's, anywhere) stays."""
        pack = packs.path_of(loc.seq)

        def copy() -> Path | None:
            try:  # compaction may have moved the record and unlinked its pack since
                src = os.open(pack, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            try:
                st = os.fstat(src)
                if read is not None and (st.st_dev, st.st_ino, loc.offset) != read:
                    return None
                data = read_exact(src, loc.length, loc.offset)
            finally:
                os.close(src)
            now = time.time()
            dest = self.quarantine_dir / f"{sid}.{time.time_ns()}"
            _write_new(dest, data)
            _write_sidecar(dest, sid, reason, now, loc.length,
                           f"{pack.relative_to(self.root)}@{loc.offset}")
            fsync_dir(self.quarantine_dir)
            return dest

        dest = await asyncio.to_thread(copy)
        if dest is None or packs.locate(sid) != loc:
            return None
        if not await packs.delete(sid, expect=loc):
            return None  # a copy put since the bad read stays (its bytes kept aside anyway)
        self._account(-loc.length, -1)
        return dest

    @staticmethod
    def _put_back(moved: Path, path: Path) -> None:
        """Return a file quarantine moved by mistake to `path`, unless a newer one is there
        already (then the moved one is a superseded copy and goes)."""
        try:
            os.link(moved, path)
        except FileExistsError:
            pass
        else:
            fsync_dir(path.parent)
        os.unlink(moved)

    async def quarantined(self) -> list[dict[str, object]]:
        """The sidecars of quarantined shards (for operators and tests)."""
        def read() -> list[dict[str, object]]:
            out = []
            for p in sorted(self.quarantine_dir.glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    out.append(json.loads(p.read_text()))
            return out
        return await asyncio.to_thread(read)


def _write_new(path: Path, data: bytes) -> None:
    """A new owner-only file holding `data`, fsynced (its directory is the caller's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_sidecar(dest: Path, sid: str, reason: str, now: float, size: int,
                   origin: str) -> None:
    """The JSON note beside a quarantined shard `dest`: what it was, why and whence."""
    side = {"shard_id": sid, "reason": reason[:2000], "time": now,
            "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "size": size, "from": origin}
    _write_new(dest.with_name(dest.name + ".json"), json.dumps(side, sort_keys=True).encode() + b"\n")
