"""A snapshot of a volume whose mount daemon is paused answers within a bound (block22).

The snapshot's part on the mounting host (the writer takes it, `mount.snapshot_mounted`)
waits in the kernel on the daemon. A daemon paused so that it still looks running (a frozen
cgroup, as `docker pause` does; a SIGSTOPped one is seen as stopped and skipped) held the
admin route and the CLI for ever. Now that part runs in a child bounded in time
(gateway/block/snaphere.py): past the bound the caller is told the mount did not answer,
and once the daemon runs again the snapshot is taken. The bound starts when the child is
ready, so a daemon that answers (not frozen) cannot fail it (review22g F4, F5). Needs root, /dev/fuse, fuse3 and the
cgroup v1 freezer.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.block.snaphere import NoAnswer, prepare_snapshot
from tests.integration.test_volumes import (  # noqa: F401 - same fixtures and requirements
    Vol,
    _states,
    pytestmark,
    vol,
)

FREEZER = Path("/sys/fs/cgroup/freezer")
needs_freezer = pytest.mark.skipif(
    not (FREEZER / "cgroup.procs").exists() or not os.access(FREEZER, os.W_OK),
    reason="needs the cgroup v1 freezer, writable (a container's cgroups are often read-only)")


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """`pid` (every thread of it) frozen in a cgroup of its own until the block ends."""
    group = FREEZER / f"tessera-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "freezer.state").write_text("FROZEN")
        while (group / "freezer.state").read_text().strip() != "FROZEN":
            time.sleep(0.01)  # polling the kernel's state, not a wait for time to pass
        try:
            yield
        finally:
            (group / "freezer.state").write_text("THAWED")
            (FREEZER / "cgroup.procs").write_text(str(pid))
    finally:
        group.rmdir()


@needs_freezer
def test_a_snapshot_of_a_paused_mount_answers_in_time_and_is_taken_once_it_runs(
        vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    name = f"paused-{uuid.uuid4().hex[:8]}"  # the volume cluster is shared: a name of its own
    vol.run("create", name, "--size", "16M")
    m = tmp_path / "m"
    vol.mount(name, m)
    st = next(s for s in _states(vol) if s.target == str(m.resolve()))
    data = Path(vol.cluster.data)
    with frozen(st.pid):
        # the 1 s runs from when the child is ready (its imports done): a daemon that is
        # not frozen answers in milliseconds, so this cannot pass without the freeze
        with pytest.raises(NoAnswer, match="did not answer within 1 s.*may still be taken"):
            prepare_snapshot(data, st.tenant, name, "s1", timeout_s=1.0)
    # it answers again once it runs: its writer takes the next snapshot
    assert prepare_snapshot(data, st.tenant, name, "s2")[0] is True
    vol.unmount(m)
