"""`nodes.forker` (how `tessera up` starts its storage nodes) and `tessera up`'s side of it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.localcluster import _start_nodes, default_config
from ops.localports import free_port
from storage.pids import pid_running
from tests.integration.cluster import ZONE_HOSTS

LINE = re.compile(r"(forked \S+ \d+|node \S+ ready on http://\S+|exited \S+ -?\d+)")
IDS = [f"n{i}" for i in range(1, 10)]  # nine ready lines at once on one pipe


def _config(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    config = tmp_path / "tessera.toml"
    config.write_text(default_config(tmp_path, free_port(), free_port(ZONE_HOSTS), free_port()))
    return config


def _kill_all(forker: subprocess.Popen, pids: dict[str, int]) -> None:
    """A test's cleanup: every node still alive and the forker, killed and reaped."""
    for pid in pids.values():
        if pid_running(pid):
            os.kill(pid, signal.SIGKILL)
    if forker.poll() is None:
        forker.kill()
    forker.wait()


def test_forker_lines_are_whole_and_it_outlives_sigterm_until_its_nodes_end(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the nodes' print must still be one write
    p = subprocess.Popen([sys.executable, "-m", "nodes.forker", "--config", str(config),
                          "--log-dir", str(tmp_path / "logs"), *IDS],
                         stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert p.stdout is not None
    pids: dict[str, int] = {}
    ready: set[str] = set()
    try:
        while len(ready) < len(IDS) or len(pids) < len(IDS):
            line = p.stdout.readline()
            assert line, f"forker ended early; ready {ready}"
            assert LINE.fullmatch(line.rstrip("\n")), repr(line)
            word, node, rest = line.split(maxsplit=2)
            if word == "forked":
                pids[node] = int(rest)
            elif word == "node":
                ready.add(node)
        assert sorted(pids) == sorted(IDS) and len(set(pids.values())) == len(IDS)
        for pid in pids.values():  # own session, the forker's child
            assert os.getsid(pid) == pid
            assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == p.pid
        assert {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids.values()} == {
            f"node-{n}" for n in IDS}  # named for ps, since they share the forker's cmdline
        p.send_signal(signal.SIGTERM)  # ignored: the nodes are stopped by pid
        os.kill(pids["n1"], signal.SIGKILL)
        assert p.stdout.readline() == "exited n1 -9\n"
        assert p.poll() is None
        for node in IDS[1:]:
            os.kill(pids[node], signal.SIGTERM)
        exits = sorted(p.stdout.readline() for _ in IDS[1:])
        assert exits == sorted(f"exited {n} 0\n" for n in IDS[1:])
        assert p.wait(30) == 0
    finally:
        _kill_all(p, pids)


def _running_with(config: Path) -> list[int]:
    """Pids whose command line names `config` (the forker and, forked from it, its nodes)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(config).encode() in (d / "cmdline").read_bytes() \
                    and pid_running(int(d.name)):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def test_a_node_that_cannot_start_fails_tessera_up_with_its_error_and_stops_the_rest(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(RuntimeError, match=r"zz exited before it was ready: tessera node: node 'zz' "
                                           r"is not in"):
        asyncio.run(_start_nodes(config, tmp_path / "logs", ["n1", "zz"]))
    assert _running_with(config) == []  # n1 and the forker were stopped, not left behind
    assert '"msg":"stopping"' in (tmp_path / "logs" / "n1.log").read_text()  # by SIGTERM


def test_work_beside_the_nodes_start_runs_and_its_failure_stops_them(tmp_path: Path) -> None:
    """`tessera up` writes a first start's tenant and keys while its nodes start: that work
    runs once the forker is started, and if it fails, no node is left behind."""
    config = _config(tmp_path)
    seen: list[list[int]] = []

    async def fails() -> None:
        # the forker is already started: its exec (the config in its command line) may lag
        # its spawn on a loaded host, so look for up to 10 s, blocking the loop meanwhile (a
        # forker not yet started when this runs could not start during the wait)
        until = time.monotonic() + 10
        while not (running := _running_with(config)) and time.monotonic() < until:
            time.sleep(0.05)  # polling /proc for a condition, not synchronizing on time
        seen.append(running)
        raise RuntimeError("bootstrap failed")

    with pytest.raises(RuntimeError, match="bootstrap failed"):
        asyncio.run(_start_nodes(config, tmp_path / "logs", ["n1", "n2"], beside=fails))
    assert seen and seen[0], "the work ran before the nodes were started"
    assert _running_with(config) == []  # the forker and both nodes were stopped
    for node in ("n1", "n2"):  # by SIGTERM, once forked, not killed past a timeout
        assert '"msg":"stopping"' in (tmp_path / "logs" / f"{node}.log").read_text()
