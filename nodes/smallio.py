"""Whole-shard disk I/O for small shards, many at a time in one worker-thread call.

A node serving a batch request writes or reads several small shards at once: one thread hop
for all of them instead of two or three each. Writes keep the durability of `ShardWriter`:
each shard is written to a temp file, fsynced, renamed into place and its directory fsynced
(new fan-out directories made durable in their parents) before it is reported written.
Reads verify every frame, as `ShardReadStream` does.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from functools import partial
from pathlib import Path

from nodes.disk import DiskShardStore
from nodes.packstore import PackLoc
from nodes.shardfile import (
    UNCHANGED,
    ShardExists,
    fsync_dir,
    install_new,
    read_exact,
    write_all,
)
from storage.errors import InvalidInput


def put_many_sync(store: DiskShardStore, items: list[tuple[str, bytes, bool]],
                  ) -> list[int | OSError | ShardExists]:
    """Store each (shard id, whole file bytes, replace) durably; per item the size it
    replaced (-1 when new, UNCHANGED when identical bytes were there), ShardExists (other
    bytes there and not `replace`) or the OSError that stopped it. Runs in a worker thread.

    Order: write every temp file and make the missing fan-out directories, then fsync the
    files and the parents of new directories, rename, and fsync each target directory. The
    first fsync of each phase commits the journal for all items, so the rest cost little.
    """
    results: list[int | OSError | ShardExists] = [-1] * len(items)
    staged: list[tuple[int, Path, Path, int]] = []  # (item, tmp path, final path, fd)
    superseded: dict[int, PackLoc] = {}  # rewrites of a packed copy: tombstoned at the end
    for i, (sid, data, replace) in enumerate(items):
        packed = store.packed_copy(sid)  # the store's one whole-shard commit rule
        if packed is not None and not replace:
            try:
                decided = store.decide_over_packed_sync(sid, partial(_same_bytes, data))
            except (OSError, ShardExists) as exc:
                results[i] = exc
                continue
            if decided is not None:
                results[i] = decided
                continue
        elif packed is not None:
            superseded[i] = packed
        tmp = store.tmp_dir / f"{sid}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            results[i] = exc
            continue
        try:
            write_all(fd, data)
        except OSError as exc:
            results[i] = exc
            _drop(fd, tmp)
            continue
        staged.append((i, tmp, store.path_of(sid), fd))
    new_dirs = _make_missing_dirs(store, [path.parent for _, _, path, _ in staged])
    done: list[tuple[int, Path, Path]] = []
    for i, tmp, path, fd in staged:
        try:
            os.fsync(fd)
            os.close(fd)
        except OSError as exc:
            results[i] = exc
            _drop(fd, tmp)
            continue
        done.append((i, tmp, path))
    failed_dirs: dict[str, OSError] = {}
    for d in new_dirs:  # parents first: a directory is durable once its parent is synced
        try:
            fsync_dir(Path(d).parent)
            store._durable_dirs.add(d)
        except OSError as exc:
            failed_dirs[d] = exc
    renamed: list[tuple[int, Path]] = []
    for i, tmp, path in done:
        bad = failed_dirs.get(str(path.parent)) or failed_dirs.get(str(path.parent.parent))
        if bad is not None:
            results[i] = bad
            _drop(-1, tmp)
            continue
        try:
            results[i] = install_new(tmp, path, items[i][0], items[i][2])
        except (OSError, ShardExists) as exc:
            results[i] = exc
            _drop(-1, tmp)
            continue
        if results[i] != UNCHANGED:
            renamed.append((i, path))
    synced: dict[Path, OSError | None] = {}
    for i, path in renamed:
        if path.parent not in synced:
            try:
                fsync_dir(path.parent)
                synced[path.parent] = None
            except OSError as exc:
                synced[path.parent] = exc
        if synced[path.parent] is not None:
            results[i] = synced[path.parent]  # type: ignore[assignment]
    for i, packed in superseded.items():  # the files are durable: now the packed copies go
        done_i = results[i]
        if isinstance(done_i, int) and done_i != UNCHANGED:
            try:
                results[i] = store.supersede_packed_sync(items[i][0], packed, done_i)
            except OSError as exc:
                results[i] = exc
    return results


def _same_bytes(data: bytes, fd: int, base: int, n: int) -> bool:
    """True when `data` is exactly bytes [base, base+n) of open `fd`."""
    return len(data) == n and hmac.compare_digest(read_exact(fd, n, base), data)


def _make_missing_dirs(store: DiskShardStore, leaves: list[Path]) -> list[str]:
    """mkdir the fan-out directories not yet known durable; the ones made or unproven, in
    creation order (each must have its parent fsynced before it counts as durable)."""
    out: list[str] = []
    for leaf in leaves:
        if str(leaf) in store._durable_dirs:
            continue
        for d in (leaf.parent, leaf):
            key = str(d)
            if key in store._durable_dirs or key in out:
                continue
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            except OSError:
                continue  # the rename into it fails and reports the error
            out.append(key)
    return out


def _drop(fd: int, tmp: Path) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def read_whole_sync(store: DiskShardStore, sid: str, first: int, count: int | None,
                    max_bytes: int) -> tuple[bytes, int]:
    """Header plus verified frames [first, first+count) of a shard, and its segment count.

    Raises NotFound, InvalidRange or ShardCorrupt as `ShardReadStream` does, InvalidInput
    when the answer would exceed `max_bytes`; a record that died while read (a read racing
    a punch) is read again where the shard is now, or NotFound (`unless_died`). Runs in a
    worker thread.
    """
    return store.unless_died(sid, lambda: _read_whole_once(store, sid, first, count,
                                                           max_bytes))


def _read_whole_once(store: DiskShardStore, sid: str, first: int, count: int | None,
                     max_bytes: int) -> tuple[bytes, int]:
    stream = store.open_read(sid, first, count)
    try:
        parts = [stream._open_sync()]
        if stream.body_bytes > max_bytes:
            raise InvalidInput(f"{stream.body_bytes} bytes is too large for a batch read")
        while stream._next < stream.end:
            data, err = stream._read_sync()
            if err is not None:
                raise err
            parts.append(data)
        return b"".join(parts), stream.segments
    finally:
        if stream._fd is not None:
            os.close(stream._fd)
            stream._fd = None
