"""An etcd member started by a process that is SIGKILLed (a test run pytest's timeout killed)
gets SIGTERM from the kernel and exits: `setpriv --pdeathsig`, not a `preexec_fn` (a plain
fork() that ran grpc's at-fork handlers and aborted the child while a store was open)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ops.localports import free_port
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None or shutil.which("setpriv") is None,
                                reason="needs etcd and util-linux setpriv")

STARTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ops.etcdcluster import EtcdCluster, EtcdMember
    root = Path(sys.argv[1]); cp, pp = int(sys.argv[2]), int(sys.argv[3])
    c = EtcdCluster(root / "data", [EtcdMember("etcd-az1", "127.0.0.1", cp, pp)], root / "log")
    c.start()
    print(c.procs["etcd-az1"].pid, flush=True)
    time.sleep(3600)  # killed by the test
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_member_exits_when_its_starter_is_sigkilled(tmp_path: Path) -> None:
    cp, pp = free_port(), free_port()
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path), str(cp), str(pp)],
                               stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    member = 0
    try:
        assert starter.stdout is not None
        member = int(starter.stdout.readline())
        assert "etcd" in Path(f"/proc/{member}/exe").resolve().name  # setpriv exec'd etcd
        starter.send_signal(signal.SIGKILL)
        starter.wait(30)
        wait_for(lambda: not _alive(member), "the member to get SIGTERM and exit", 60)
    finally:
        starter.kill()
        starter.wait(30)
        if member and _alive(member):
            os.kill(member, signal.SIGKILL)
