"""Mount and unmount: the FUSE daemon, and for `--fs ext4` the loop device and file system.

`mount` starts `python -m gateway.block.fuse` in its own session, waits until its directory
is a mount point, and for a file system sets up a loop device over `<dir>/volume`, runs
mkfs on first use and mounts it. The steps are recorded in a state file under the data
directory so `unmount DIR` can undo them in reverse and wait for the daemon to flush and exit.
The daemon is recorded as soon as it is started: a mount command interrupted while it waits
stops it, and one killed leaves a record `unmount DIR` undoes (before, a daemon that mounted
after its command was gone was mounted with no record).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.block.boundedchild import run_bounded
from gateway.block.writeback import DEFAULT_KERNEL_DIRTY_MIB, set_budget
from storage.errors import Conflict
from storage.pids import pid_alive
from storage.volume_records import check_snapshot_name

READY_TIMEOUT_S = 60.0
DETACHED_MARK = "detached: every write committed"  # the daemon's last log line, clean exits
EXIT_TIMEOUT_S = 300.0
# How long a resize waits for a mount's daemon to take the new size (the truncate, then the
# loop device's new capacity): the resize is committed by then, and a wedged daemon must
# not hang `volume resize` or hold an admin request for good (review21d F3).
GROW_ANSWER_S = 10.0
CHECKPOINT_XATTR = "user.tessera.checkpoint"  # set on `volume`: fold the journal into extents
SNAPSHOT_XATTR = "user.tessera.snapshot"  # set on `volume` to a name: the writer snapshots
# Written bytes a daemon holds in its journal's overlay before folding them into extents:
# its memory grows by about this much, and the larger it is, the more writes each fold (one
# whole extent rewritten) carries. 256 against 128: fio's random 4 KiB writes over 128 MiB,
# server CPU per write with the journal folded 0.109 -> 0.086 ms (median of 3 alternating
# runs, benchmarks/README.md). `--no-journal`'s whole-extent cache keeps 128 MiB.
DEFAULT_MAX_DIRTY_MIB = 256
NO_JOURNAL_MAX_DIRTY_MIB = 128
log = logging.getLogger("tessera.block")


class MountError(RuntimeError):
    """A mount step failed; the message says which and why, in one line."""


class MountInterrupted(MountError):
    """The mount command was interrupted (Ctrl-C) before its mount completed: undone."""


def _check_stop(stop: threading.Event | None) -> None:
    """MountInterrupted if the command was interrupted: each step after the daemon is ready
    checks it, so an interrupt before the mount completed leaves nothing mounted (review18c
    L4: one after `wait_ready` was not looked at; the command exited 130, mounted)."""
    if stop is not None and stop.is_set():
        raise MountInterrupted("mount interrupted; undone, nothing is mounted")


@dataclass
class MountState:
    volume: str
    tenant: str
    target: str  # the directory the user named
    fuse_dir: str
    pid: int
    fs: str | None = None
    loop: str | None = None
    log: str = ""
    log_offset: int = 0
    # Recorded before its daemon is ready, so a mount command interrupted while it waits
    # (Ctrl-C, killed) leaves a mount `unmount DIR` can undo, never one nobody knows of:
    # True until the daemon has mounted (records from before this field were saved ready).
    starting: bool = False


def require_fuse() -> None:
    """Refuse a mount, in one line that says what to install, when FUSE support is missing."""
    import ctypes.util
    import importlib.util

    if importlib.util.find_spec("mfusepy") is None:
        raise MountError("volume mounts need the FUSE extra: pip install -e '.[fuse]' "
                         "(mfusepy), and libfuse3 (Debian: apt install fuse3)")
    if ctypes.util.find_library("fuse3") is None:
        raise MountError("volume mounts need libfuse3: apt install fuse3 (Debian)")


def _state_dir(data_dir: Path) -> Path:
    d = data_dir / "volumes" / "mounts"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _state_path(data_dir: Path, target: Path) -> Path:
    h = hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:16]
    return _state_dir(data_dir) / f"{h}.json"


def mounted_states(data_dir: Path) -> list[MountState]:
    return [MountState(**json.loads(p.read_text())) for p in _state_dir(data_dir).glob("*.json")]


def _run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise MountError(f"{cmd[0]} failed: {' '.join(msg[-1].split()) if msg else r.returncode}")
    return r.stdout.strip()


def _fuse_mounted(path: str) -> bool:
    """os.path.ismount, except that a FUSE mount whose daemon died (ENOTCONN) counts too."""
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return os.path.ismount(path)


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def spawn_daemon(config: Path, tenant: str, volume: str, fuse_dir: Path, log: Path,
                 lease_ttl_s: float | None = None, journal: bool = True,
                 max_dirty_mib: int | None = None,
                 lease_watched: int = 0) -> subprocess.Popen[bytes]:
    """Spawn the FUSE daemon in its own session (`wait_ready` waits for its mount).
    `max_dirty_mib`: the daemon's bound on written bytes held in memory (its default: None).
    `lease_watched`: a lease revision already watched a ttl unrenewed (`VolumeService.open`)."""
    fuse_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "gateway.block.fuse", "--config", str(config),
           "--tenant", tenant, "--volume", volume, "--mountpoint", str(fuse_dir)]
    if lease_ttl_s is not None:
        cmd += ["--lease-ttl", str(lease_ttl_s)]
    if not journal:
        cmd.append("--no-journal")
    if max_dirty_mib is not None:
        cmd += ["--max-dirty-mib", str(max_dirty_mib)]
    if lease_watched:
        cmd += ["--lease-watched", str(lease_watched)]
    # The daemon runs the very code this command runs (cwd "/" keeps no directory busy).
    code_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": code_root + (os.pathsep + path if path else "")}
    # owner-only, whatever the umask of the shell that ran the command (the data dir is)
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd="/", env=env)


def wait_ready(proc: subprocess.Popen[bytes], fuse_dir: Path, log: Path,
               stop: threading.Event | None = None) -> None:
    """Wait until the daemon `proc` has mounted `fuse_dir` (MountError if it exits first,
    takes longer than READY_TIMEOUT_S, or `stop` is set: its command was interrupted)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            raise MountInterrupted("mount interrupted before its FUSE daemon was ready; "
                                   "stopped it, nothing is mounted")
        if proc.poll() is not None:
            raise MountError(_last_line(log) or f"FUSE daemon exited with {proc.returncode}")
        if os.path.ismount(fuse_dir) and (fuse_dir / "volume").exists():
            return
        time.sleep(0.05)
    proc.kill()
    raise MountError(f"FUSE daemon did not mount {fuse_dir} within {READY_TIMEOUT_S:.0f}s")


def _stop_starting(st: MountState, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Stop the daemon of a mount that never became ready (its command was interrupted or
    failed): SIGTERM (before its mount it exits at once, after it libfuse unmounts and the
    daemon detaches, nothing having been written), then SIGKILL past `timeout_s`; a FUSE
    mount it left is unmounted. A pid that is no longer this mount's daemon (the record
    outlived it: a reboot, a daemon that died) is another process's: left alone. A record of
    pid 0 (its command killed between the spawn and the save naming the pid) is matched to
    its daemon by command line (`_daemon_of_record`)."""
    pid = _daemon_of_record(st)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
    if _fuse_mounted(st.fuse_dir):
        subprocess.run(["fusermount3", "-u", "-z", st.fuse_dir], capture_output=True)


def _is_daemon_of(st: MountState, pid: int | None = None) -> bool:
    """Whether `pid` (default `st.pid`) runs this mount's FUSE daemon (its command line
    names the module and the mount's FUSE directory), not a process that reused a dead
    daemon's pid."""
    try:
        args = Path(f"/proc/{pid or st.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"gateway.block.fuse" in args and os.fsencode(st.fuse_dir) in args


def _daemon_of_record(st: MountState) -> int:
    """The live daemon of a mount record (0: none): its pid if recorded, else (pid 0: the
    command was killed before it saved the pid, and the daemon may still go on to mount)
    the process whose command line is this mount's daemon's. Before, a pid-0 record was
    dropped by `unmount` while its daemon mounted, unrecorded (review18c L4)."""
    if st.pid:
        return st.pid if _alive(st.pid) and _is_daemon_of(st) else 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _is_daemon_of(st, int(entry.name)):
            return int(entry.name)
    return 0


def mount(config: Path, data_dir: Path, tenant: str, volume: str, vid: str, target: Path,
          fs: str | None, lease_ttl_s: float | None = None,
          confirm: Callable[[int], None] | None = None, journal: bool = True,
          max_dirty_mib: int | None = None,
          kernel_dirty_mib: int = DEFAULT_KERNEL_DIRTY_MIB,
          stop: threading.Event | None = None, lease_watched: int = 0) -> MountState:
    """Start the daemon on a FUSE directory of this mount's own; `confirm(pid)` (raising
    to refuse) runs once it is up, before any loop device or file system is set up.
    `kernel_dirty_mib`: the kernel's write-back budget for the mount (0: its default).
    `stop`, set by the caller (its command interrupted), stops a daemon not yet ready.
    `lease_watched`: for the daemon (`spawn_daemon`)."""
    target = target.resolve()
    if _state_path(data_dir, target).exists():
        raise MountError(f"{target} already has a volume mounted (tessera volume unmount)")
    if fs is not None:
        check_fs(fs)
    _make_mount_point(target)
    mount_id = _state_path(data_dir, target).stem  # each mount: its own FUSE dir and log
    fuse_dir = target if fs is None else data_dir / "volumes" / "fuse" / mount_id
    daemon_log = data_dir / "volumes" / "logs" / f"{tenant}.{volume}.{mount_id}.log"
    log_offset = daemon_log.stat().st_size if daemon_log.exists() else 0
    # recorded before the daemon exists (pid 0: not known yet), so no moment of this
    # command's leaves a daemon no record names
    st = MountState(volume=volume, tenant=tenant, target=str(target), fuse_dir=str(fuse_dir),
                    pid=0, fs=fs, log=str(daemon_log), log_offset=log_offset, starting=True)
    _save(data_dir, st)
    try:
        proc = spawn_daemon(config, tenant, volume, fuse_dir, daemon_log, lease_ttl_s,
                            journal, max_dirty_mib, lease_watched)
        pid = st.pid = proc.pid
        _save(data_dir, st)
        wait_ready(proc, fuse_dir, daemon_log, stop)
        st.starting = False
        _save(data_dir, st)
    except BaseException:  # a failed start, or Ctrl-C: no daemon left mounted unrecorded
        _stop_starting(st)
        _state_path(data_dir, target).unlink(missing_ok=True)
        raise
    try:
        if confirm is not None:
            confirm(pid)
        if kernel_dirty_mib:
            why = set_budget(fuse_dir, kernel_dirty_mib)
            if why is not None:
                log.warning("kernel write-back budget of %d MiB not set: %s",
                            kernel_dirty_mib, why)
        _check_stop(stop)
        if fs is None:
            return st
        st.loop = _run("losetup", "--find", "--show", str(fuse_dir / "volume"))
        _save(data_dir, st)
        _check_stop(stop)
        held = _fs_type(st.loop)
        if held is not None and held != fs:
            raise MountError(f"volume {volume} holds an {held} file system, not {fs}: "
                             f"mount it with --fs {held}" if held else
                             f"volume {volume} holds data that is not a {fs} file system "
                             "(blkid names no type); not formatted")
        if held is None:
            # mkfs discards the whole device first: trims of never-written extents, free.
            opts = ["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"]
            _run(f"mkfs.{fs}", *(opts if fs.startswith("ext") else []), st.loop)
            _check_stop(stop)
        _run("mount", "-t", fs, st.loop, str(target))  # done: an interrupt now keeps it
    except BaseException:
        _quietly_unmount(data_dir, target)
        raise
    return st


def _quietly_unmount(data_dir: Path, target: Path) -> None:
    """Undo a mount that failed half way; the first error is the one worth reporting."""
    try:
        unmount(data_dir, target)
    except MountError:
        pass


def release_file_systems(data_dir: Path, pid: int) -> None:
    """Lazily unmount the file systems and detach the loop devices that mounts made over the
    FUSE file of daemon `pid`, so its own FUSE mount can go: for a daemon whose starter is
    gone (`TESSERA_EXIT_WITH_PID`), as nobody will run `unmount` for it."""
    for st in mounted_states(data_dir):
        if st.pid != pid:
            continue
        if st.fs:
            subprocess.run(["umount", "-l", st.target], capture_output=True)
        if st.loop:
            subprocess.run(["losetup", "-d", st.loop], capture_output=True)


def _fs_type(dev: str) -> str | None:
    """The file system type the device carries ("ext4"; "" for a signature blkid cannot
    name), or None if blkid finds none."""
    r = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", dev], capture_output=True,
                       text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def supported_filesystems() -> list[str]:
    """The file systems `--fs` can make: those with a `mkfs.NAME` on PATH."""
    names = set()
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        try:
            names.update(p.name[len("mkfs."):] for p in Path(d or ".").glob("mkfs.*"))
        except OSError:
            continue
    return sorted(n for n in names if n)


def check_fs(fs: str) -> None:
    """Refuse, in one line naming the choices, an `--fs` this machine cannot make."""
    if not fs.isidentifier() or shutil.which(f"mkfs.{fs}") is None:
        have = ", ".join(supported_filesystems()) or "none: install e2fsprogs"
        raise MountError(f"unsupported file system {fs!r} (no mkfs.{fs} on this machine); "
                         f"--fs takes one of: {have}")


def _make_mount_point(target: Path) -> None:
    """Create the mount point's last component if missing, as `mount` needs it; a missing
    parent is refused (a mistyped path must not make directories up to `/`)."""
    if target.is_dir():
        return
    if target.exists():
        raise MountError(f"mount point {target} is not a directory")
    if not target.parent.is_dir():
        raise MountError(f"mount point {target}: its parent directory {target.parent} does "
                         "not exist; create it first (mkdir -p) or choose another directory")
    target.mkdir()


def _save(data_dir: Path, st: MountState) -> None:
    p = _state_path(data_dir, Path(st.target))
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(st)))
    os.replace(tmp, p)


def unmount(data_dir: Path, target: Path, timeout_s: float = EXIT_TIMEOUT_S) -> MountState:
    """Undo a mount: file system, loop device, FUSE; waits for the daemon's final flush."""
    target = target.resolve()
    sp = _state_path(data_dir, target)
    if not sp.exists():
        raise MountError(f"no tessera volume is mounted on {target}")
    st = MountState(**json.loads(sp.read_text()))
    if not st.pid:  # killed before it saved the pid: wait for the daemon it started
        st.pid = _daemon_of_record(st)
    if st.starting and not _fuse_mounted(st.fuse_dir):
        # its mount command was stopped while the daemon started: nothing was written
        _stop_starting(st)
        sp.unlink()
        return st
    if st.fs and os.path.ismount(target):
        _run("umount", str(target))
    if st.loop:
        subprocess.run(["losetup", "-d", st.loop], capture_output=True)
    deadline = time.monotonic() + timeout_s
    while _fuse_mounted(st.fuse_dir):
        r = subprocess.run(["fusermount3", "-u", st.fuse_dir], capture_output=True, text=True)
        if r.returncode == 0 or not _fuse_mounted(st.fuse_dir):
            break
        if time.monotonic() > deadline:
            raise MountError(f"fusermount3 -u {st.fuse_dir}: {r.stderr.strip()}")
        time.sleep(0.1)  # the loop device lets go of the file asynchronously
    while _alive(st.pid):
        if time.monotonic() > deadline:
            raise MountError(f"FUSE daemon {st.pid} still flushing after {timeout_s:.0f}s")
        time.sleep(0.05)
    sp.unlink()
    with open(st.log, "rb") as f:
        f.seek(st.log_offset)
        tail = f.read().decode(errors="replace")
    if "flush failed" in tail:
        raise MountError(f"volume {st.volume} unmounted from {target}, but its daemon reported "
                         f"flush failures: writes may have been lost; see {st.log}")
    if DETACHED_MARK not in tail:
        raise MountError(f"volume {st.volume} unmounted from {target}, but its FUSE daemon "
                         f"(pid {st.pid}) had died before its final flush: writes not yet "
                         "fsynced may have been lost")
    return st


def quiesce(data_dir: Path, tenant: str, name: str) -> list[int]:
    """If the volume is mounted here, push its caches down: a crash-consistent point.
    Returns the pids of the daemons flushed (`VolumeService.snapshot` checks the writer).

    Also used by the admin API's snapshot route (same host, same data directory).
    """
    flushed: list[int] = []
    for st in mounted_states(data_dir):
        if st.volume != name or st.tenant != tenant or not _daemon_running(st.pid) or (
                st.starting and not os.path.ismount(st.fuse_dir)):
            continue  # a daemon that died, was fenced or is starting holds nothing to push
        if st.fs:
            fd = os.open(st.target, os.O_RDONLY)
            try:
                os.sync()
            finally:
                os.close(fd)
        fd = os.open(Path(st.fuse_dir) / "volume", os.O_RDONLY)
        try:
            os.fsync(fd)
            # Fold the journal into extents: a snapshot freezes the extent map only.
            try:
                os.setxattr(fd, CHECKPOINT_XATTR, b"1")
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                continue  # a daemon without the checkpoint did not fold: not flushed
        finally:
            os.close(fd)
        flushed.append(st.pid)
    return flushed


def old_daemon_warning(name: str) -> str:
    """The one line said when a snapshot of volume `name` fell back to `quiesce` + freeze
    because its daemon here predates the snapshot attribute: a write fsynced between that
    fold and the freeze can be in it while an earlier one is not (not point-in-time)."""
    return (f"warning: the mount of volume {name!r} here runs a daemon without writer-taken "
            "snapshots; this snapshot may not be point-in-time (remount the volume for "
            "point-in-time snapshots)")


def snapshot_mounted(data_dir: Path, tenant: str, name: str, snap: str) -> bool:
    """If the volume's writer runs here, have it take snapshot `snap` itself: True once it
    did. Only the writer can freeze at one point in time (a fold after `quiesce` and before
    the freeze could commit a later write without an earlier one still in its journal).
    False: no writer here, or one from before the snapshot attribute (then `quiesce`)."""
    check_snapshot_name(snap)
    for st in mounted_states(data_dir):
        if st.volume != name or st.tenant != tenant or not _daemon_running(st.pid) or (
                st.starting and not os.path.ismount(st.fuse_dir)):
            continue
        if st.fs:
            os.sync()  # the file system's dirty pages down to the volume first
        fd = os.open(Path(st.fuse_dir) / "volume", os.O_RDONLY)
        try:
            os.fsync(fd)
            os.setxattr(fd, SNAPSHOT_XATTR, snap.encode())
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return False
            if exc.errno == errno.EEXIST:
                raise Conflict(f"volume {name!r} already has a snapshot {snap!r}") from None
            raise
        finally:
            os.close(fd)
        return True
    return False


def grow_mounted(data_dir: Path, tenant: str, name: str, size: int,
                 pid: int | None = None) -> list[tuple[MountState, str]]:
    """The volume was resized to `size`: have its mounts here see it (the FUSE file grows
    to the record's size, and a loop device under a file system takes the new capacity;
    growing the file system itself is its owner's step, resize2fs). Returns each mount
    with "" once grown, else what happened to it, said after "the mount at TARGET": it
    keeps its old size (a daemon from before this, EPERM; a fenced one, EIO; a stopped
    daemon or a mount still starting, with what to do), its daemon did not answer within
    GROW_ANSWER_S, or its file grew but its loop device did not. A mount on another host
    is grown by its own daemon, which reads the record on each lease renewal
    (gateway/block/growwatch.py); `pid`: only the mount of that daemon."""
    out = []
    for st in mounted_states(data_dir):
        if st.volume != name or st.tenant != tenant or pid not in (None, st.pid):
            continue
        file = Path(st.fuse_dir) / "volume"
        if not _daemon_running(st.pid):
            if _proc_state(st.pid) in (b"T", b"t"):  # SIGSTOP, a debugger: cannot answer now
                out.append((st, f"keeps its old size: its daemon {st.pid} is stopped; once "
                                f"it runs, truncate -s {size} {file}"))
            continue
        if st.starting and not os.path.ismount(st.fuse_dir):
            out.append((st, "keeps its old size: it was still being mounted; resize again "
                            "(same size) once it is"))
            continue
        why = _answered([sys.executable, "-I", "-S", "-c", _TRUNCATE, str(file), str(size)])
        if why == "":
            out.append((st, f"did not answer within {GROW_ANSWER_S:g} s (its daemon "
                            f"{st.pid}): stat {file} says whether it took the new size; if "
                            f"not, truncate -s {size} {file} once it answers"))
            continue
        if why is not None:
            out.append((st, f"keeps its old size until remounted ({why})"))
            continue
        if st.loop and (why := _answered(["losetup", "--set-capacity", st.loop])) is not None:
            why = why or f"losetup did not answer within {GROW_ANSWER_S:g} s"
            out.append((st, f"grew its FUSE file {file} to {size} bytes, but its loop device "
                            f"{st.loop} kept its old capacity ({why}): losetup "
                            f"--set-capacity {st.loop}"))
            continue
        out.append((st, ""))
    return out


def mounts_dict(mounts: list[tuple[MountState, str]]) -> dict[str, list]:
    """`grow_mounted`'s answer for JSON (the CLI's --json, the admin API): the mounts grown,
    and each one not (fully) grown with what happened to it."""
    return {"mounts_grown": [st.target for st, why in mounts if not why],
            "mounts_not_grown": [{"target": st.target, "why": why}
                                 for st, why in mounts if why]}


# os.truncate in a child (`_answered`); its OSError, as str(exc), is its exit message
_TRUNCATE = """import os, sys
try:
    os.truncate(sys.argv[1], int(sys.argv[2]))
except OSError as exc:
    sys.exit(str(exc))
"""


def _answered(cmd: list[str]) -> str | None:
    """Run `cmd` in a child for at most GROW_ANSWER_S (`boundedchild.run_bounded`): None
    once it succeeded, its last line of error when it failed, "" when it did not end in
    time (killed and left behind)."""
    res = run_bounded(cmd, GROW_ANSWER_S)
    if res is None:
        return ""
    rc, _, err = res
    if rc == 0:
        return None
    lines = err.strip().splitlines()
    return " ".join(lines[-1].split()) if lines else f"{cmd[0]} exited {rc}"


def _proc_state(pid: int) -> bytes | None:
    """The process's state letter (/proc/PID/stat), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _daemon_running(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in (b"Z", b"T", b"t", b"X")  # gone, or stopped
