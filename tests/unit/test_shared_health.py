"""The gateway's worker processes share one view of node health (`storage/sharedhealth.py`):
a node one tracker finds dead by a failed request or by its probe is avoided by every other
tracker on the same page at once, failures add up across them, and a return seen by the one
that probes brings the node back for all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from storage.config import NodeSpec
from storage.health import DOWN, OUT, SUSPECT, UP, HealthTracker
from storage.sharedhealth import SharedHealth
from storage.testing.simnodes import SimNodes

NODES = [NodeSpec(id=f"n{i}", zone=f"az{i % 3 + 1}", address=f"127.0.{i % 3 + 1}.{i}:1")
         for i in range(1, 7)]


def _pair(tmp_path: Path) -> tuple[SimNodes, HealthTracker, HealthTracker]:
    """Two trackers (two gateway workers) on one page, each with its own mapping of it."""
    sim = SimNodes(list(NODES))
    a, b = HealthTracker(NODES, sim), HealthTracker(NODES, sim)
    a.share(SharedHealth(tmp_path / "health"))
    b.share(SharedHealth(tmp_path / "health"))
    return sim, a, b


def test_a_node_one_worker_saw_fail_is_avoided_by_the_other(tmp_path: Path) -> None:
    _, a, b = _pair(tmp_path)
    assert b.is_usable("n2")
    a.report_failure("n2", "Cannot connect to host 127.0.2.2:1 [Connect call failed]")
    assert not b.is_usable("n2")
    assert "n2" not in {n.id for n in b.placeable()}
    assert b.states["n2"].state == DOWN and b.states["n2"].since == a.states["n2"].since


def test_failures_add_up_across_workers(tmp_path: Path) -> None:
    _, a, b = _pair(tmp_path)
    a.report_failure("n3", "timeout")
    assert b.is_usable("n3") and b.states["n3"].state == SUSPECT  # one failure: usable
    b.report_failure("n3", "timeout")  # the second, seen by another worker
    assert not a.is_usable("n3") and a.states["n3"].state == DOWN


def test_a_success_anywhere_brings_the_node_back_everywhere(tmp_path: Path) -> None:
    _, a, b = _pair(tmp_path)
    a.report_failure("n4", "refused")
    assert not b.is_usable("n4")
    b.report_success("n4")
    assert a.is_usable("n4") and a.states["n4"].state == UP and a.states["n4"].failures == 0


async def test_one_workers_probe_decides_for_all(tmp_path: Path) -> None:
    sim, a, b = _pair(tmp_path)
    sim.down.add("n5")
    await a.probe_once()  # only worker 0 runs the probe loop
    assert not b.is_usable("n5")
    sim.down.discard("n5")
    await a.probe_once(only_down=True)
    assert b.is_usable("n5")


async def test_out_is_shared_too(tmp_path: Path) -> None:
    sim = SimNodes(list(NODES))
    a = HealthTracker(NODES, sim, out_after_s=0.0)
    b = HealthTracker(NODES, sim)
    a.share(SharedHealth(tmp_path / "health"))
    b.share(SharedHealth(tmp_path / "health"))
    sim.down.add("n6")
    await a.probe_once()
    await a.probe_once(only_down=True)
    assert b.states["n6"].state == OUT


def test_a_tracker_joining_late_publishes_what_it_knew_and_adopts_the_rest(
        tmp_path: Path) -> None:
    sim = SimNodes(list(NODES))
    a, b = HealthTracker(NODES, sim), HealthTracker(NODES, sim)
    a.share(SharedHealth(tmp_path / "health"))
    a.report_failure("n1", "refused")
    b.report_failure("n2", "refused")  # before it shares
    b.share(SharedHealth(tmp_path / "health"))
    assert not b.is_usable("n1") and not a.is_usable("n2")


def test_another_process_writes_and_this_one_reads(tmp_path: Path) -> None:
    """The page is a real shared mapping: a write in another process is read here."""
    page = tmp_path / "health"
    here = SharedHealth(page)
    code = ("import sys; from storage.sharedhealth import SharedHealth\n"
            "p = SharedHealth(sys.argv[1])\n"
            "for i in range(200):\n"
            "    with p.locked():\n"
            "        p.read(); p.write(f'node-{i % 7}', 'down', i, float(i))\n")
    subprocess.run([sys.executable, "-c", code, str(page)], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])
    got = here.read()
    assert got is not None
    seq, entries = got
    assert seq == 400 and len(entries) == 7
    assert entries["node-3"] == ("down", 199, 199.0)  # its last write (199 % 7 == 3)


def test_a_writer_killed_inside_its_write_does_not_blind_the_page(tmp_path: Path) -> None:
    """A worker killed between a write's two sequence stores leaves the sequence odd; the
    next write evens it out again instead of flipping parity for good (every reader would
    then keep retrying and fall back to its stale view for the rest of the page's life)."""
    page = tmp_path / "health"
    code = ("import os, signal, sys\n"
            "from storage import sharedhealth as sh\n"
            "p = sh.SharedHealth(sys.argv[1])\n"
            "seq, used = sh._HEAD.unpack_from(p._map, 0)\n"
            "sh._HEAD.pack_into(p._map, 0, seq + 1, used)\n"  # a write's first store ...
            "os.kill(os.getpid(), signal.SIGKILL)\n")  # ... and the worker dies there
    done = subprocess.run([sys.executable, "-c", code, str(page)], timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -9
    here = SharedHealth(page)
    assert here.read() is None  # the dead writer's odd sequence
    with here.locked():
        here.write("n1", "down", 1, 1.0)
    got = here.read()
    assert got is not None and got[1]["n1"] == ("down", 1, 1.0)
    other = SharedHealth(page)
    with other.locked():
        other.read()
        other.write("n2", "down", 1, 2.0)
    got = here.read()
    assert got is not None and set(got[1]) == {"n1", "n2"}


def test_long_node_ids_are_refused(tmp_path: Path) -> None:
    page = SharedHealth(tmp_path / "health")
    with pytest.raises(ValueError), page.locked():
        page.write("x" * 65, "down", 1, 0.0)


async def test_a_write_failure_short_of_proof_is_settled_by_a_probe_at_once(
        tmp_path: Path) -> None:
    """A dropped keep-alive connection or a timeout leaves a node suspect (still used);
    `confirm` (a failing write calls it before answering 503) probes it now, so the
    client's retry through any worker avoids it if it is dead, and uses it if it is not."""
    sim, a, b = _pair(tmp_path)
    sim.down.add("n2")
    for nid in ("n2", "n3"):
        a.report_failure(nid, "ServerDisconnectedError: Server disconnected")
    assert b.is_usable("n2") and b.states["n2"].state == SUSPECT
    await a.confirm(["n2", "n3", "n4"])
    assert not b.is_usable("n2") and b.states["n2"].state == DOWN
    assert b.states["n3"].state == UP and b.states["n4"].state == UP
