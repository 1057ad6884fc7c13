"""`storage.pids.pid_running` counts a zombie (exited, not yet reaped) as gone, where
`pid_alive` still sees it: the tests that wait for a child to exit rely on the difference."""

from __future__ import annotations

import os
import subprocess
import sys

from storage.pids import pid_alive, pid_running


def test_a_zombie_is_not_running_but_is_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert pid_running(child.pid) and pid_alive(child.pid)
        child.stdin.close()  # type: ignore[union-attr]  # the child reads EOF and exits
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert not pid_running(child.pid)
        assert pid_alive(child.pid)  # unreaped: the pid still names a (zombie) process
    finally:
        child.kill()
        child.wait()
    assert not pid_running(child.pid) and not pid_running(0) and not pid_running(-1)
