"""A whole shard committed in one call (the lean front's PUT) goes through an unnamed
O_TMPFILE file linked into its directory (`ShardWriter._commit_unnamed_sync`): no temp
name made or unlinked, the same checks (body MAC first, no clobbering), and named temp
files again when the filesystem or /proc cannot do it."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from nodes.disk import DiskShardStore
from nodes.shardfile import ShardExists
from nodes.shardwrite import BodyMismatch
from storage.config import PackSettings
from storage.errors import NotFound
from storage.shards.format import ShardHeader, pack_frame
from storage.shards.ids import shard_id

# The shard-file path these tests are about (whole shards above [packs] max_shard_bytes,
# or packing off): small shards would go to a pack by default.
FILES_ONLY = PackSettings(max_shard_bytes=0)

pytestmark = pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="no O_TMPFILE here")


def _shard(blocks: int = 3, stripe: bytes | None = None) -> tuple[str, bytes]:
    h = ShardHeader(k=4, m=2, index=2, segment_size=4096, block_size=1024,
                    stripe_id=stripe or os.urandom(16))
    raw = h.pack() + b"".join(pack_frame(h, i, os.urandom(1024)) for i in range(blocks))
    return shard_id(h.stripe_id, h.index), raw


async def _commit(store: DiskShardStore, sid: str, raw: bytes, mac: bytes | None = None,
                  ) -> int:
    """Commit `raw` whole, as the lean front does: its digest checked against `mac`."""
    w = await store.begin_put(sid)
    w.digest = hashlib.sha256()
    expect = hashlib.sha256(raw).digest() if mac is None else mac
    return await w.commit([memoryview(raw)], expect_digest=expect)


class _Opens:
    """os.open, recording each call's path and flags."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, refuse_tmpfile: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self._real = os.open
        self._refuse = refuse_tmpfile
        monkeypatch.setattr(os, "open", self)

    def __call__(self, path: Any, flags: int, *args: Any, **kw: Any) -> int:
        self.calls.append((os.fspath(path), flags))
        if self._refuse and flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "not here")
        return self._real(path, flags, *args, **kw)

    def tmpfiles(self) -> int:
        return sum(1 for _, f in self.calls if f & os.O_TMPFILE == os.O_TMPFILE)


async def test_whole_shard_is_never_named_before_its_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskShardStore(tmp_path, packs=FILES_ONLY)
    await store.start()
    opens = _Opens(monkeypatch)
    links: list[tuple[Any, ...]] = []
    real_link = os.link
    monkeypatch.setattr(os, "link", lambda *a, **kw: (links.append(a), real_link(*a, **kw))[1])
    sid, raw = _shard()
    assert await _commit(store, sid, raw) == len(raw)
    assert opens.tmpfiles() == 1
    assert not any(p.startswith(str(tmp_path / "tmp")) for p, _ in opens.calls)
    assert [a[0].startswith("/proc/self/fd/") for a in links] == [True]
    assert store.path_of(sid).read_bytes() == raw
    assert os.stat(store.path_of(sid)).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "tmp") == []
    usage = await store.usage()
    assert (usage["shards"], usage["used_bytes"]) == (1, len(raw))
    assert (await store.verify(sid)).bad == []


async def test_same_bytes_again_succeed_other_bytes_are_refused(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path, packs=FILES_ONLY)
    await store.start()
    sid, raw = _shard()
    stripe = bytes.fromhex(sid.split(".")[0])
    await _commit(store, sid, raw)
    assert await _commit(store, sid, raw) == len(raw)  # idempotent
    other_sid, other = _shard(blocks=2, stripe=stripe)
    assert other_sid == sid
    with pytest.raises(ShardExists):
        await _commit(store, sid, other)
    assert store.path_of(sid).read_bytes() == raw
    usage = await store.usage()
    assert (usage["shards"], usage["used_bytes"]) == (1, len(raw))
    assert os.listdir(tmp_path / "tmp") == []


async def test_a_body_failing_its_mac_touches_no_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskShardStore(tmp_path, packs=FILES_ONLY)
    await store.start()
    opens = _Opens(monkeypatch)
    sid, raw = _shard()
    with pytest.raises(BodyMismatch):
        await _commit(store, sid, raw, mac=b"\x00" * 32)
    assert opens.tmpfiles() == 0
    assert not os.path.exists(os.path.dirname(store.path_of(sid)))  # no leaf made either
    with pytest.raises(NotFound):
        await store.stat(sid)


@pytest.mark.parametrize("good", [True, False])
async def test_without_o_tmpfile_named_temp_files_and_the_same_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good: bool) -> None:
    store = DiskShardStore(tmp_path, packs=FILES_ONLY)
    await store.start()
    opens = _Opens(monkeypatch, refuse_tmpfile=True)
    sid, raw = _shard()
    if good:  # the MAC was checked (and the digest consumed) before the fallback
        assert await _commit(store, sid, raw) == len(raw)
        assert store.path_of(sid).read_bytes() == raw
    else:
        with pytest.raises(BodyMismatch):
            await _commit(store, sid, raw, mac=b"\x01" * 32)
        with pytest.raises(NotFound):
            await store.stat(sid)
    assert os.listdir(tmp_path / "tmp") == []
    sid2, raw2 = _shard()
    assert await _commit(store, sid2, raw2) == len(raw2)
    assert store.unnamed_temp is False and store.path_of(sid2).read_bytes() == raw2
    tried = opens.tmpfiles()
    assert tried == 1  # refused once, then remembered
    sid3, raw3 = _shard()
    before = len(opens.calls)
    await _commit(store, sid3, raw3)  # straight to a named temp file
    assert opens.tmpfiles() == tried
    assert [p for p, _ in opens.calls[before:] if p.startswith(str(tmp_path / "tmp"))]
    assert store.path_of(sid3).read_bytes() == raw3
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize("refusal", [errno.ENOENT, errno.EPERM, errno.EXDEV, errno.EACCES])
async def test_no_proc_or_a_refused_proc_link_falls_back_to_named_temp_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int) -> None:
    """No /proc (ENOENT), or a sandbox (gVisor) or FUSE filesystem refusing linkat through
    /proc/self/fd (EPERM, EXDEV, EACCES): the shard is committed the named way and the
    store remembers it (before, a refused link failed every whole-shard PUT)."""
    store = DiskShardStore(tmp_path, packs=FILES_ONLY)
    await store.start()
    real_link, real_isdir = os.link, os.path.isdir

    def link(src: Any, dst: Any, **kw: Any) -> None:
        if str(src).startswith("/proc/"):
            raise OSError(refusal, os.strerror(refusal))
        real_link(src, dst, **kw)

    monkeypatch.setattr(os, "link", link)
    if refusal == errno.ENOENT:
        monkeypatch.setattr(os.path, "isdir", lambda p: False if p == "/proc/self/fd"
                            else real_isdir(p))
    sid, raw = _shard()
    assert await _commit(store, sid, raw) == len(raw)
    assert store.unnamed_temp is False
    assert store.path_of(sid).read_bytes() == raw
    assert os.listdir(tmp_path / "tmp") == []
    assert (await store.usage())["shards"] == 1
    sid2, raw2 = _shard()
    with pytest.raises(BodyMismatch):  # the named way still checks the body MAC
        await _commit(store, sid2, raw2, mac=b"\0" * 32)


@pytest.mark.parametrize("unnamed", [True, False])
async def test_an_identical_shard_already_there_is_acknowledged_only_after_a_directory_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool) -> None:
    """A sender's retry can race its own first attempt: the first writer may have linked
    the shard and not yet fsynced its directory. The duplicate's success (UNCHANGED) used
    to skip the directory fsync, so its 201 could come before the entry was durable."""
    store = DiskShardStore(tmp_path, packs=FILES_ONLY)
    await store.start()
    store.unnamed_temp = unnamed
    sid, raw = _shard()
    assert await _commit(store, sid, raw) == len(raw)
    leaf = os.path.realpath(os.path.dirname(store.path_of(sid)))
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert await _commit(store, sid, raw) == len(raw)  # the same bytes again: success
    assert leaf in synced  # ...only once the shard's directory entry is durable
    assert store.path_of(sid).read_bytes() == raw
