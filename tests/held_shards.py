"""The shards a node holds on disk, found the way the node finds them (issue 17), for tests
that lose, rot or count shards behind the node's back.

A shard is a file below `shards/` or, with packing on, the newest PUT record in one of the
node's packs (`nodes.packstore`): the pack index wins, then the file, as
`DiskShardStore.locate` decides. The index is rebuilt here read-only, by scanning the packs in
order (`packformat.scan`) and applying each record with the node's own rule
(`PackStore._apply`), so a running node is never disturbed (no truncate, no set-aside).

`HeldShard` looks like the `Path` of a shard file to the tests (`name`, `read_bytes`,
`write_bytes`, `exists`, `unlink`), so one test body covers both layouts:

- `write_bytes` of a packed shard overwrites its record's body in place (same length only:
  a lie or a flip, never a resize);
- `unlink` of a packed shard removes it as the node would: a signed DELETE when the node
  answers, else (the node is down) a TOMBSTONE record appended to its newest pack, durably,
  which its restart applies.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nodes import packformat as pf
from nodes.packrecovery import PACK_NAME
from nodes.packstore import PackStore
from storage.shards.ids import parse_shard_id, relative_path

# (sid) -> True when the node answered a DELETE of it; False when it could not be reached
OnlineDelete = Callable[[str], bool]


@dataclass(frozen=True)
class HeldShard:
    """One shard on one node's disk: `path` is its file, or the pack holding it at `base`."""

    root: Path  # the node's data dir
    sid: str
    path: Path
    base: int  # 0 for a file
    size: int
    packed: bool
    online_delete: OnlineDelete | None = None

    @property
    def name(self) -> str:
        return self.sid

    def __fspath__(self) -> str:
        """The shard's file, for tests about files (O_DIRECT, page cache); a packed shard has
        none of its own."""
        if self.packed:
            raise TypeError(f"{self.sid} is packed: it has no file of its own")
        return str(self.path)

    def __lt__(self, other: HeldShard) -> bool:
        return (str(self.root), self.sid) < (str(other.root), other.sid)

    def now(self) -> HeldShard:
        """The shard where the node holds it now (a repair may have moved it into a pack);
        FileNotFoundError when it holds none."""
        got = locate(self.root, self.online_delete).get(self.sid)
        if got is None:
            raise FileNotFoundError(f"{self.root.name} holds no {self.sid}")
        return got

    def read_bytes(self) -> bytes:
        cur = self.now()
        if not cur.packed:
            return cur.path.read_bytes()
        with open(cur.path, "rb") as f:
            got = os.pread(f.fileno(), cur.size, cur.base)
        if len(got) != cur.size:
            raise FileNotFoundError(f"{self.sid}: pack {cur.path} cut short")
        return got

    def write_bytes(self, raw: bytes) -> None:
        """New bytes for the shard: a file is replaced whole (atomically); a packed record's
        body is overwritten in place when `raw` has its length, else the record is removed
        (`unlink`) and `raw` becomes the shard's file, which the node then reads."""
        cur = self.now()
        if cur.packed and len(raw) == cur.size:
            _pwrite(cur.path, raw, cur.base)
            return
        if cur.packed:
            cur.unlink()
        path = self.root / "shards" / relative_path(self.sid)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(raw)
        os.replace(tmp, path)  # a node reading meanwhile sees old or new, whole

    def flip(self, offset: int, mask: int = 0x20) -> None:
        """XOR one byte of the shard (bit rot); a packed record's byte in place."""
        cur = self.now()
        raw = bytearray(cur.read_bytes())
        raw[offset] ^= mask
        if cur.packed:
            _pwrite(cur.path, bytes(raw[offset:offset + 1]), cur.base + offset)
        else:
            cur.write_bytes(bytes(raw))

    def stat(self) -> os.stat_result:
        """The file's stat; for a packed shard one with its size and the pack's times."""
        cur = self.now()
        st = os.stat(cur.path)
        if not cur.packed:
            return st
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, 1, st.st_uid, st.st_gid,
                               cur.size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    def exists(self) -> bool:
        return locate(self.root).get(self.sid) is not None

    is_file = exists

    def unlink(self) -> None:
        """Lose the shard: its file, or its packed record (module doc)."""
        cur = self.now()
        if not cur.packed:
            cur.path.unlink()
        elif self.online_delete is None or not self.online_delete(self.sid):
            append_tombstone(self.root, self.sid)


def _pwrite(path: Path, raw: bytes, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, raw, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _pack_paths(root: Path) -> list[Path]:
    d = root / "packs"
    if not d.is_dir():
        return []
    return sorted(d / n for n in os.listdir(d) if PACK_NAME.match(n))


def pack_index(root: Path) -> PackStore:
    """A never-opened PackStore whose index is rebuilt from the packs below `root`,
    read-only (module doc)."""
    store = PackStore(root)
    for path in _pack_paths(root):
        seq = int(PACK_NAME.match(path.name).group(1), 16)  # type: ignore[union-attr]
        with open(path, "rb") as f:
            fd = f.fileno()
            got = pf.scan(lambda off, n, fd=fd: os.pread(fd, n, off), os.fstat(fd).st_size)
        for rec in got.records:
            store._apply(seq, rec)
    return store


def _files(root: Path) -> Iterator[Path]:
    shards = root / "shards"
    if shards.is_dir():
        yield from (p for p in shards.rglob("*") if p.is_file())


def locate(root: Path, online_delete: OnlineDelete | None = None) -> dict[str, HeldShard]:
    """Every shard the node below `root` holds: packed (the index wins) and in files."""
    out: dict[str, HeldShard] = {}
    for p in _files(root):
        try:
            size = p.stat().st_size
        except FileNotFoundError:  # deleted since listed (the node's GC runs meanwhile)
            continue
        out[p.name] = HeldShard(root, p.name, p, 0, size, False, online_delete)
    store = pack_index(root)
    for sid, loc in store.index.items():
        out[sid] = HeldShard(root, sid, store.path_of(loc.seq), loc.offset, loc.length, True,
                             online_delete)
    return out


def shard_at(root: Path, sid: str, online_delete: OnlineDelete | None = None) -> HeldShard:
    """Shard `sid` where the node below `root` reads it (`DiskShardStore.locate`): its packed
    record, else its file's path (which may not exist)."""
    got = locate(root, online_delete).get(sid)
    if got is not None:
        return got
    path = root / "shards" / relative_path(sid)
    return HeldShard(root, sid, path, 0, 0, False, online_delete)


def held(root: Path, online_delete: OnlineDelete | None = None) -> list[HeldShard]:
    """`locate`'s shards, sorted by id."""
    return sorted(locate(root, online_delete).values())


def append_tombstone(root: Path, sid: str) -> None:
    """Append a durable TOMBSTONE for `sid` to the node's newest pack (the node must be down:
    its committer writes at offsets it keeps itself)."""
    packs = _pack_paths(root)
    assert packs, f"no pack below {root}"
    stripe, index = parse_shard_id(sid)
    rec = b"".join(bytes(p) for p in pf.encode(pf.TOMBSTONE, stripe, index, time.time_ns(), []))
    fd = os.open(packs[-1], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, rec)
        os.fsync(fd)
    finally:
        os.close(fd)


def http_delete(url: str, secret: bytes, node_id: str) -> OnlineDelete:
    """An `OnlineDelete` sending a signed DELETE to the node at `url`."""
    from storage.shards.auth import sign

    def delete(sid: str) -> bool:
        path = f"/v1/shards/{sid}"
        req = urllib.request.Request(url + path, method="DELETE",
                                     headers=sign(secret, "DELETE", path, node_id))
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status in (200, 204)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return True
            raise AssertionError(f"DELETE {path} on {node_id}: {e.code} {e.read()!r}") from e
        except urllib.error.URLError as e:  # refused: the node is down
            if isinstance(e.reason, (ConnectionRefusedError, ConnectionResetError)):
                return False
            raise
        except (ConnectionRefusedError, ConnectionResetError):
            # reset: a killed node's listening socket outlived it a moment (its forker holds
            # it), so the connection was taken and dropped: it is down all the same (ci20a)
            return False
    return delete
