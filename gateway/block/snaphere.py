"""A snapshot's part on the host that mounts the volume, bounded in time.

A snapshot of a volume mounted here first has the mount's daemon take it (its writer
freezes at one point in time, `mount.snapshot_mounted`), or, for a daemon from before that,
flush it (`mount.quiesce`). Both wait in the kernel on the daemon: a daemon paused (a frozen
cgroup, `docker pause`: it looks running) or a flush that does not end held the admin
route, and the CLI, for ever, and a thread held so keeps a gateway from exiting. So that
part runs in a child process (`boundedchild.run_bounded`, as `mount.grow_mounted` does for
a resize) for at most `SNAPSHOT_ANSWER_S` from when it is ready (its Python start and
imports not counted); past it the caller is told the mount did not answer (`NoAnswer`) and
that the snapshot may still be taken once the daemon answers (the child's request stays
queued with the daemon).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gateway.block.boundedchild import run_bounded
from gateway.block.mount import MountError, mounted_states
from storage.errors import Conflict
from storage.volume_records import check_snapshot_name

SNAPSHOT_ANSWER_S = 10.0
_CONFLICT, _OSERROR = 3, 4

# runs in the child: sys.argv = [-c, package root, data_dir, tenant, name, snap]
_CHILD = """import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from gateway.block.boundedchild import run_bounded
from gateway.block.mount import quiesce, snapshot_mounted
from storage.errors import Conflict
sys.stdout.buffer.write(b"R")  # ready (boundedchild.READY): the bound starts now
sys.stdout.flush()
data_dir, tenant, name, snap = Path(sys.argv[2]), *sys.argv[3:6]
try:
    taken = snapshot_mounted(data_dir, tenant, name, snap)
    flushed = [] if taken else quiesce(data_dir, tenant, name)
except Conflict as exc:
    sys.stderr.write(str(exc))
    sys.exit(3)
except OSError as exc:
    sys.stderr.write(str(exc))
    sys.exit(4)
print(json.dumps({"taken": taken, "flushed": flushed}))
"""


class NoAnswer(MountError):
    """The mount here did not answer within SNAPSHOT_ANSWER_S."""


def prepare_snapshot(data_dir: Path, tenant: str, name: str, snap: str,
                     timeout_s: float | None = None) -> tuple[bool, list[int]]:
    """Have the volume's mount here take snapshot `snap`, else flush it: (taken by its
    writer, pids of the daemons flushed). Conflict: the writer has a snapshot of that
    name; OSError: the mount failed the request; NoAnswer: no answer in time."""
    check_snapshot_name(snap)  # bad input is InvalidInput here (400), not a child's crash
    if not any(st.volume == name and st.tenant == tenant for st in mounted_states(data_dir)):
        return False, []  # not mounted here: nothing to wait on, no child (~1 s) to start
    timeout_s = SNAPSHOT_ANSWER_S if timeout_s is None else timeout_s
    root = str(Path(__file__).resolve().parents[2])
    # -I: isolated, so no module of the caller's cwd (a json.py) runs in it as root
    res = run_bounded([sys.executable, "-I", "-c", _CHILD, root, str(data_dir), tenant, name,
                       snap], timeout_s, ready=True)
    if res is None:
        raise NoAnswer(f"the mount of volume {name!r} on this host did not answer within "
                       f"{timeout_s:g} s (its daemon is paused or still flushing); snapshot "
                       f"{snap!r} may still be taken once it answers: list the volume's "
                       "snapshots before retrying")
    rc, out, err = res
    if rc == _CONFLICT:
        raise Conflict(err.strip())
    if rc == _OSERROR:
        raise OSError(err.strip())
    if rc != 0:
        lines = err.strip().splitlines()
        raise MountError(f"snapshot of the mount here failed: "
                         f"{lines[-1] if lines else rc}")
    res = json.loads(out)
    return bool(res["taken"]), [int(x) for x in res["flushed"]]
