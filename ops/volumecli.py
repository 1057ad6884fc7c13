"""`tessera volume ...`: create, inspect, snapshot, clone, mount and unmount block volumes.

The cluster comes from TESSERA_CONFIG and the tenant from the credentials in the
environment (`tessera.env`): AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; an admin credential
may name any tenant with --tenant. The CLI uses the storage library directly (like librbd).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.block.mount import DEFAULT_MAX_DIRTY_MIB, NO_JOURNAL_MAX_DIRTY_MIB
from gateway.block.writeback import DEFAULT_KERNEL_DIRTY_MIB
from ops.progress import MiB
from ops.progress import Progress as _Progress
from storage.config import config_path, load_config
from storage.errors import AccessDenied, ConfigError, InvalidInput, NotFound
from storage.records import unpack

if TYPE_CHECKING:
    from storage.cluster import Cluster
    from storage.volumes import Volume, VolumeService

# The storage stack is imported by the commands that run (`_run`), not to build the parser:
# every `tessera` command builds it, and most (admin, status) need none of it.
Action = Callable[[argparse.Namespace, "Cluster", "VolumeService", str], Awaitable[Any]]
# How long a mount waits for a snapshot that holds the attach lease while it replays a gone
# writer's journal (volumes.snapshot) before it gives up with what to do.
SNAPSHOT_WAIT_S = 120.0


def _config_path(a: argparse.Namespace) -> Path:
    try:
        return config_path(a.config)
    except ConfigError as exc:
        raise InvalidInput(str(exc)) from None


async def _tenant(a: argparse.Namespace, c: Cluster) -> str:
    ak = os.environ.get("AWS_ACCESS_KEY_ID", "")
    sk = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    cred = await c.tenants.credential(ak) if ak else None
    if cred is None or not hmac.compare_digest(cred.secret_key, sk):
        raise AccessDenied("no valid credentials: source tessera.env "
                           "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    if a.tenant and a.tenant != cred.tenant:
        if cred.role != "admin":
            raise AccessDenied("only an admin credential may name another tenant: set "
                               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to tessera.env's "
                               "TESSERA_ADMIN_ACCESS_KEY / TESSERA_ADMIN_SECRET_KEY")
        try:  # a misspelt tenant is an error, not an empty listing
            await c.tenants.get(a.tenant)
        except NotFound:
            raise InvalidInput(f"tenant {a.tenant!r} does not exist; see `tessera tenant "
                               "list`") from None
        return str(a.tenant)
    if cred.role == "admin" and not a.tenant:
        raise InvalidInput("an admin credential must name the tenant with --tenant")
    return cred.tenant


def _run(a: argparse.Namespace, action: Action) -> int:
    if a.volume_command == "mount":
        from gateway.block.mount import require_fuse

        require_fuse()  # before opening anything: say what to install

    from storage.cluster import Cluster

    async def go() -> Any:
        c = await Cluster.open(load_config(_config_path(a)))
        try:
            svc = c.volumes
            return await action(a, c, svc, await _tenant(a, c))
        finally:
            await c.close()
    result = asyncio.run(go())
    return int(result) if isinstance(result, int) else 0


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(rows: list[list[str]], head: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


# actions --------------------------------------------------------------------------------

def _done(a: argparse.Namespace, text: str, doc: dict[str, Any]) -> None:
    """What a changing command prints: the sentence, or with --json the same facts as JSON."""
    print(json.dumps(doc) if a.json else text)


async def _create(a, c, svc, t):  # type: ignore[no-untyped-def]
    from gateway.admin.volumes import volume_dict
    from storage.volumes import parse_size

    v = await svc.create(t, a.name, parse_size(a.size), parse_size(a.extent_size))
    print(json.dumps(volume_dict(v)) if a.json else
          f"created volume {v.name}: {_human(v.size)}, extents of {_human(v.extent_size)}")


async def _list(a, c, svc, t):  # type: ignore[no-untyped-def]
    from gateway.admin.volumes import volume_dict

    vols = await svc.list(t)
    known = {(v.tenant, v.name): v for v in vols}
    snaps = [await _origin_snapshot(svc, v, known) for v in vols]
    if a.json:
        print(json.dumps([_with_snapshot(volume_dict(v), s) for v, s in zip(vols, snaps,
                                                                           strict=True)]))
        return
    _table([[v.name, _human(v.size), _human(v.extent_size), str(len(v.snapshots)),
             f"{v.base['name']}@{s}" if v.base else "-"] for v, s in zip(vols, snaps, strict=True)],
           ["NAME", "SIZE", "EXTENT", "SNAPSHOTS", "ORIGIN"])


async def _origin_snapshot(svc: VolumeService, v: Volume,
                           known: dict[tuple[str, str], Volume] | None = None) -> str:
    """The name the user gave the snapshot a clone was made from (the base record keeps only
    its generation, which `list` showed as `vol1@2` for a snapshot named `s2`); the generation
    as `gen N` if the origin or its snapshot is gone."""
    if not v.base:
        return ""
    key = (v.base["tenant"], v.base["name"])
    origin = (known or {}).get(key)
    if origin is None:
        try:
            origin = await svc.get(*key)
        except NotFound:
            origin = None
    snap = origin.snapshots.get(int(v.base["gen"])) if origin and origin.id == v.base["id"] \
        else None
    return str(snap["name"]) if snap else f"gen {v.base['gen']}"


def _with_snapshot(d: dict[str, Any], snap: str) -> dict[str, Any]:
    """A volume's JSON with its origin snapshot's name beside the generation."""
    if d.get("base"):
        d["base"] = {**d["base"], "snapshot": snap}
    return d


async def _show(a, c, svc, t):  # type: ignore[no-untyped-def]
    from gateway.admin.volumes import volume_dict

    v = await svc.get(t, a.name)
    stored = await svc.stored_bytes(t, a.name)
    lease = await svc.attached_at_a_glance(v.id)
    snap = await _origin_snapshot(svc, v)
    d = _with_snapshot(volume_dict(v, stored, lease), snap)
    if a.json:
        print(json.dumps(d))
        return
    for k in ("name", "id", "tenant", "profile", "generation"):
        print(f"{k + ':':14}{d[k]}")
    print(f"{'size:':14}{_human(v.size)} ({v.size} bytes)")
    print(f"{'extent size:':14}{_human(v.extent_size)}")
    print(f"{'written:':14}{_human(stored)} (before erasure overhead)")
    print(f"{'snapshots:':14}{', '.join(s['name'] for s in d['snapshots']) or '-'}")
    origin = f"{v.base['name']}@{snap} (generation {v.base['gen']})" if v.base else "-"
    print(f"{'origin:':14}{origin}")
    print(f"{'clones:':14}{', '.join(v.clones) or '-'}")
    attached = f"{lease['holder']} token {lease['token']}" if lease else "-"
    if lease and lease.get("unconfirmed"):
        attached += (" (not renewed by this host's clock: its writer may have stopped; a mount "
                     "or delete waits one lease ttl to be sure)")
    print(f"{'attached:':14}{attached}")


class _LeaseWatch:
    """Says on stderr what a command waits for while it watches a volume's attach lease (a
    writer that died on another host, or clocks that disagree: only a ttl without renewal
    tells), and how long is left; remembers the record's revision (`revision`)."""

    def __init__(self, name: str, then: str) -> None:
        self.name = name
        self.then = then  # what the command does once the lease is found lapsed
        self.revision = 0
        self.said = ""  # the last countdown line: one per whole second left, not per poll

    def __call__(self, item: Any, left: float) -> None:
        if item.revision != self.revision:
            self.revision = item.revision
            self.said = ""
            rec = unpack(item.value)
            print(f"volume {self.name}: its attach lease names {rec.get('holder')} (token "
                  f"{rec.get('token')}), which this host has not seen renewed (a writer that "
                  "stopped or died, here or on another host, or clocks that disagree); "
                  f"watching the lease up to {left:.0f}s for a renewal before {self.then}",
                  file=sys.stderr, flush=True)
            return
        line = f"volume {self.name}: no renewal yet, {left:.0f}s left"
        if line != self.said:
            self.said = line
            print(line, file=sys.stderr, flush=True)


async def _delete(a, c, svc, t):  # type: ignore[no-untyped-def]
    await svc.delete(t, a.name, _LeaseWatch(a.name, "deleting it"))
    _done(a, f"deleted volume {a.name}", {"deleted": a.name})


async def _resize(a, c, svc, t):  # type: ignore[no-untyped-def]
    from gateway.admin.volumes import volume_dict
    from gateway.block.mount import grow_mounted, mounts_dict
    from storage.volumes import parse_size

    v = await svc.resize(t, a.name, parse_size(a.size))
    mounts = await asyncio.to_thread(grow_mounted, c.cfg.data_dir, t, a.name, v.size)
    text = f"volume {v.name} is now {_human(v.size)}"
    for st, why in mounts:
        text += (f"; the mount at {st.target} {why}" if why else
                 f"; mounted at {st.target}: its {st.fs} file system keeps its "
                 f"size until grown (resize2fs {st.loop})" if st.loop else
                 f"; {Path(st.fuse_dir) / 'volume'} is {_human(v.size)} too")
    _done(a, text, {**volume_dict(v), **mounts_dict(mounts)})


async def _snapshot(a, c, svc, t):  # type: ignore[no-untyped-def]
    from gateway.block.mount import old_daemon_warning
    from gateway.block.snaphere import prepare_snapshot

    if a.snap_cmd == "create":
        taken, flushed = await asyncio.to_thread(prepare_snapshot, c.cfg.data_dir, t, a.name,
                                                 a.snap)
        if taken:
            g = (await svc.get(t, a.name)).snapshot_gen(a.snap)  # its writer took it
        else:
            if flushed:  # a writer here that could fold but not snapshot: the old race
                print(old_daemon_warning(a.name), file=sys.stderr)
            g = await svc.snapshot(t, a.name, a.snap, flushed=flushed)
        _done(a, f"snapshot {a.name}@{a.snap} (generation {g})",
              {"volume": a.name, "snapshot": a.snap, "generation": g})
    elif a.snap_cmd == "delete":
        await svc.delete_snapshot(t, a.name, a.snap)
        _done(a, f"deleted snapshot {a.name}@{a.snap}",
              {"volume": a.name, "deleted_snapshot": a.snap})
    else:
        v = await svc.get(t, a.name)
        rows = [{"name": s["name"], "generation": g, "created": s["created"]}
                for g, s in sorted(v.snapshots.items())]
        if a.json:
            print(json.dumps(rows))
        else:
            _table([[r["name"], str(r["generation"]),
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))]
                    for r in rows], ["NAME", "GENERATION", "CREATED"])


async def _clone(a, c, svc, t):  # type: ignore[no-untyped-def]
    name, _, snap = a.source.partition("@")
    if not snap:
        raise InvalidInput("clone source is VOLUME@SNAPSHOT")
    from gateway.admin.volumes import volume_dict

    v = await svc.clone(t, name, snap, a.name)
    _done(a, f"cloned {name}@{snap} to volume {v.name}", volume_dict(v))


async def _flatten(a, c, svc, t):  # type: ignore[no-untyped-def]
    v = await svc.get(t, a.name)
    if not v.base:  # never a clone, or flattened already: nothing is copied
        _done(a, f"volume {a.name} is not a clone: it has no origin to stop depending on",
              {"flattened": a.name})
        return
    await svc.flatten(t, a.name, _Progress(f"flatten {a.name}", v.size, v.extent_size))
    _done(a, f"volume {a.name} no longer depends on its origin", {"flattened": a.name})


async def _export(a, c, svc, t):  # type: ignore[no-untyped-def]
    v = await svc.get(t, a.name)  # a misspelt volume or snapshot leaves the file alone
    if a.snapshot:
        v.snapshot_gen(a.snapshot)
    with open(a.file, "wb") as f:  # before the attach: a bad path leaves no lease behind
        h = await svc.open(t, a.name, holder="export", snapshot=a.snapshot)
        prog = _Progress(f"export {a.name}", h.vol.size, h.vol.extent_size)
        try:
            for idx in range(h.vol.extents):
                prog(idx, h.vol.extents)
                data = await h.read_extent(idx)
                if data is None:
                    f.seek(h.extent_len(idx), 1)
                else:
                    f.write(data)
            f.truncate(h.vol.size)
        finally:
            await h.close()
    _done(a, f"exported {a.name} to {a.file}", {"exported": a.name, "file": a.file})


async def _import(a, c, svc, t):  # type: ignore[no-untyped-def]
    size = os.path.getsize(a.file)
    v = await svc.get(t, a.name)
    if size > v.size:
        raise InvalidInput(f"{a.file} ({size} bytes) is larger than the volume")
    h = await svc.open(t, a.name, holder=f"import:{os.getpid()}")
    prog = _Progress(f"import {a.name}", size, v.extent_size)
    try:
        with open(a.file, "rb") as f:
            for idx in range(-(-size // v.extent_size)):
                prog(idx, -(-size // v.extent_size))
                data = f.read(v.extent_size)
                await h.write(idx * v.extent_size, data)
    finally:
        await h.close()
    _done(a, f"imported {a.file} into {a.name}", {"imported": a.file, "volume": a.name})


def still_stopping(name: str) -> None:
    """What a Ctrl-C while an interrupted mount stops says (the first one was heard)."""
    print(f"volume {name}: still stopping the mount: waiting for it to undo what it started "
          "(or to keep a mount that had completed), so the exit status says what is left",
          file=sys.stderr, flush=True)


def still_mounted(name: str, where: str) -> None:
    """What a Ctrl-C after the mount completed says: nothing is left to stop."""
    print(f"volume {name}: the mount has completed and stays mounted; there is nothing to "
          f"interrupt (`tessera volume unmount {where}` undoes it)", file=sys.stderr, flush=True)


async def _mount(a, c, svc, t):  # type: ignore[no-untyped-def]
    from gateway.block.mount import MountError, MountInterrupted, mount
    from storage.volumes import VolumeAttached

    v = await svc.get(t, a.name)
    watch = _LeaseWatch(a.name, "mounting it")
    held = await _after_snapshot(svc, v.id, a.name, watch)
    if held is not None:  # refuse before anything is started or mounted
        raise VolumeAttached(f"volume {a.name!r} is already attached by {held['holder']} "
                             f"(lease token {held['token']}); unmount it there first")
    loop = asyncio.get_running_loop()

    def confirm(pid: int) -> None:
        """The lease must name the daemon this command started, nobody else."""
        rec = asyncio.run_coroutine_threadsafe(svc.attached_by(v.id), loop).result()
        proc = (rec or {}).get("proc") or {}
        if rec is None or proc.get("pid") != pid or proc.get("host") != socket.gethostname():
            who = rec["holder"] if rec else "nobody"
            raise MountError(f"volume {a.name!r}: the attach lease is held by {who}, not by "
                             f"the daemon this mount started (pid {pid}); not mounted")

    # Ctrl-C (or SIGTERM, taken as one) tells the mount (in a thread) to stop, and this
    # command waits for it: a mount not completed is undone (exit 130, nothing mounted); one
    # completed before it saw the interrupt stays mounted and the command says so and
    # succeeds. The exit code always says whether the volume is mounted (review18c L4: an
    # interrupt after the daemon was ready exited 130 with the volume mounted). A second
    # Ctrl-C only says what is waited for: asyncio.run's own handler raised
    # KeyboardInterrupt, so the command left (130) with its thread still mounting, its lease
    # confirmation waiting on a loop that no longer ran.
    stop = threading.Event()

    def interrupt() -> None:
        if stop.is_set():
            still_stopping(a.name)
        stop.set()

    sigs = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in sigs}  # asyncio.run's own for SIGINT
    for sig in sigs:
        loop.add_signal_handler(sig, interrupt)
    try:
        st = await asyncio.to_thread(
            mount, _config_path(a), c.cfg.data_dir, t, a.name, v.id, Path(a.dir), a.fs,
            a.lease_ttl, confirm, not a.no_journal, a.max_dirty_mib, a.kernel_dirty_mib, stop,
            watch.revision)
    except BaseException as exc:
        for sig in sigs:  # the handlers from before back (remove_signal_handler alone put
            loop.remove_signal_handler(sig)  # Python's default in: a traceback, review19c L5)
            signal.signal(sig, before[sig])
        if not isinstance(exc, MountInterrupted):
            raise
        print(f"volume {a.name}: mount interrupted; nothing is mounted", file=sys.stderr,
              flush=True)
        return 130
    # mounted: a Ctrl-C until the command ends is answered in one line; SIGTERM ends it
    loop.add_signal_handler(signal.SIGINT, still_mounted, a.name, a.dir)
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, before[signal.SIGTERM])
    if stop.is_set():  # the mount had completed: kept; the interrupt is taken as answered
        print(f"volume {a.name}: interrupted after the mount had completed; it stays mounted "
              f"(`tessera volume unmount {a.dir}` undoes it)", file=sys.stderr, flush=True)
    where = st.target if st.fs else str(Path(st.fuse_dir) / "volume")
    print(f"volume {a.name} mounted on {where}" + (f" ({st.fs} on {st.loop})" if st.fs else ""))


async def _after_snapshot(svc: VolumeService, vid: str, name: str,
                          watching: _LeaseWatch) -> dict[str, Any] | None:
    """Who holds the volume once a snapshot holding it (replaying a crashed writer's journal,
    then detaching) is done: waited for, up to SNAPSHOT_WAIT_S; it used to fail the mount."""
    from storage.volumes import VolumeAttached

    loop = asyncio.get_running_loop()
    deadline = loop.time() + SNAPSHOT_WAIT_S
    held = await svc.attached_by(vid, watching)
    if held is not None and str(held["holder"]).startswith("snapshot:"):
        print(f"volume {name} is held by {held['holder']} while it replays the journal; "
              "waiting", file=sys.stderr, flush=True)
    while held is not None and str(held["holder"]).startswith("snapshot:"):
        if loop.time() > deadline:
            raise VolumeAttached(
                f"volume {name!r} is still held by {held['holder']} after "
                f"{SNAPSHOT_WAIT_S:.0f}s (a snapshot replaying its journal): mount again when "
                f"`tessera volume show {name}` shows it detached")
        await asyncio.sleep(0.2)
        held = await svc.attached_by(vid, watching)
    return held


def _unmount(a: argparse.Namespace) -> int:
    from gateway.block.mount import unmount

    cfg = load_config(_config_path(a))
    st = unmount(cfg.data_dir, Path(a.dir))  # raises when writes may have been lost
    print(f"volume {st.volume} unmounted from {st.target}; all writes committed")
    return 0


def _mib(least: int) -> Callable[[str], int]:
    """An argparse type for a MiB option: a whole number, at least `least`."""
    floor = f", at least {least}" if least else ""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = least - 1
        if n < least:
            raise argparse.ArgumentTypeError(f"must be a whole number of MiB{floor}: {text!r}")
        return n
    return parse


def add_parser(sub: Any) -> None:
    """Register `tessera volume ...` on the top-level subparsers."""
    vp = sub.add_parser("volume", help="block volumes: create, snapshot, clone, mount")
    vs = vp.add_subparsers(dest="volume_command", required=True)

    def cmd(name: str, action: Action | None, help_: str) -> argparse.ArgumentParser:
        p = vs.add_parser(name, help=help_)
        p.add_argument("--config", help="tessera.toml (default: $TESSERA_CONFIG)")
        p.add_argument("--tenant", help="tenant (admin credentials only)")
        p.add_argument("--json", action="store_true", help="JSON output")
        if action is not None:
            p.set_defaults(func=lambda a, action=action: _run(a, action))
        return p

    p = cmd("create", _create, "create a thin-provisioned volume")
    p.add_argument("name")
    p.add_argument("--size", required=True, help="e.g. 10G")
    p.add_argument("--extent-size", default=str(MiB), help="1M to 4M (default 1M)")
    cmd("list", _list, "list volumes")
    cmd("show", _show, "show one volume").add_argument("name")
    cmd("delete", _delete, "delete a volume (and its snapshots)").add_argument("name")
    p = cmd("resize", _resize, "grow a volume")
    p.add_argument("name")
    p.add_argument("--size", required=True)
    p = cmd("snapshot", _snapshot, "create, list or delete snapshots")
    p.add_argument("snap_cmd", choices=["create", "list", "delete"])
    p.add_argument("name")
    p.add_argument("snap", nargs="?", default="")
    p = cmd("clone", _clone, "new volume from a snapshot: clone VOLUME@SNAP NAME")
    p.add_argument("source")
    p.add_argument("name")
    cmd("flatten", _flatten, "copy a clone's shared extents so it stands alone"
        ).add_argument("name")
    p = cmd("export", _export, "write the volume (or a snapshot) to a raw image file")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--snapshot")
    p = cmd("import", _import, "write a raw image file into the volume")
    p.add_argument("name")
    p.add_argument("file")
    p = cmd("mount", _mount, "attach: expose DIR/volume, or mount a file system on DIR")
    p.add_argument("name")
    p.add_argument("dir")
    p.add_argument("--fs", help="file system (e.g. ext4): mkfs on first use, loop mount")
    p.add_argument("--lease-ttl", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-journal", action="store_true",
                   help="commit whole extents on fsync instead of appending to the journal")
    p.add_argument("--max-dirty-mib", type=_mib(1), default=None, metavar="MIB",
                   help=f"written bytes the daemon holds in memory before folding them into "
                        f"extents (default {DEFAULT_MAX_DIRTY_MIB}, {NO_JOURNAL_MAX_DIRTY_MIB} "
                        f"with --no-journal; the daemon's memory grows by about this much)")
    p.add_argument("--kernel-dirty-mib", type=_mib(0), default=DEFAULT_KERNEL_DIRTY_MIB,
                   metavar="MIB",
                   help=f"written bytes the kernel may hold for the volume before sending "
                        f"them to the daemon, coalesced; half of it kept whatever other disks "
                        f"write (default {DEFAULT_KERNEL_DIRTY_MIB}; 0: the kernel's own "
                        f"share, at most 1%% of its dirty limit; root only)")
    p = cmd("unmount", None, "detach what `mount` set up on DIR (waits for the flush)")
    p.add_argument("dir")
    p.set_defaults(func=_unmount)
