"""`EtcdCluster.stop` stops one member at a time, so a leader's hand-over on SIGTERM goes to
a member still running (all at once, it waited out etcd's 7 s request timeout)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from ops.etcdcluster import EtcdCluster, default_members


class FakeMember:
    """A member process: records what it is told; ends when signalled."""

    def __init__(self, name: str, log: list[str], stuck: bool = False) -> None:
        self.name, self.log, self.stuck = name, log, stuck
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        assert sig == signal.SIGTERM
        self.log.append(f"term {self.name}")

    def wait(self, timeout: float | None = None) -> int:
        if self.stuck and timeout is not None:
            raise subprocess.TimeoutExpired("etcd", timeout)
        self.log.append(f"gone {self.name}")
        self.returncode = 0
        return 0

    def kill(self) -> None:
        self.log.append(f"kill {self.name}")


def _cluster(tmp_path: Path, log: list[str], stuck: str = "") -> EtcdCluster:
    c = EtcdCluster(tmp_path / "data", default_members(2379, 2380), tmp_path / "logs")
    c.procs = {m.name: FakeMember(m.name, log, stuck=m.name == stuck)  # type: ignore[misc]
               for m in c.members}
    return c


def test_each_member_is_gone_before_the_next_is_told_to_stop(tmp_path: Path) -> None:
    log: list[str] = []
    c = _cluster(tmp_path, log)
    names = [m.name for m in c.members]
    c.stop()
    assert log == [e for n in names for e in (f"term {n}", f"gone {n}")]
    assert c.procs == {}


def test_a_member_that_does_not_stop_is_killed_and_the_rest_still_stop(tmp_path: Path) -> None:
    log: list[str] = []
    names = [m.name for m in default_members(2379, 2380)]
    c = _cluster(tmp_path, log, stuck=names[0])
    c.stop(timeout_s=0.01)
    assert log[:3] == [f"term {names[0]}", f"kill {names[0]}", f"gone {names[0]}"]
    assert log[3:] == [e for n in names[1:] for e in (f"term {n}", f"gone {n}")]
