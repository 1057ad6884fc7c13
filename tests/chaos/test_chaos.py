"""A bounded chaos run on real processes: faults while a workload runs, then no loss."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from ops.chaos import schedule

NODES = [f"n{i}" for i in range(1, 10)]
ZONES = ["az1", "az2", "az3"]


# Bounds for a hang, not a loaded box: the repair after healing (each of `tessera chaos`'s
# two waits) and the whole run, under pytest's 600 s; the two waits plus a 20 s run and the
# cluster's start stay inside the run's bound. An idle run repairs in seconds.
REPAIR_TIMEOUT = "180"
RUN_TIMEOUT_S = 560


def _chaos(args: list[str]) -> str:
    """Run `tessera chaos` with `args`; assert it exited 0 having lost nothing; its stdout.
    Past the bound it gets SIGINT (its cleanup stops the cluster it started), not SIGKILL."""
    p = subprocess.Popen([sys.executable, "-m", "ops.cli", "chaos", *args,
                          "--repair-timeout", REPAIR_TIMEOUT],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        raise AssertionError(f"tessera chaos ran past {RUN_TIMEOUT_S} s: "
                             + out[-3000:] + err[-3000:]) from None
    assert p.returncode == 0, out[-3000:] + err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"lost": 0, "wrong": 0,
                                                      "redundant": True, "lies_left": 0}
    return out


def test_same_seed_same_schedule() -> None:
    assert schedule(26, 60, NODES, ZONES) == schedule(26, 60, NODES, ZONES)
    assert schedule(26, 60, NODES, ZONES) != schedule(27, 60, NODES, ZONES)


def test_bounded_chaos_run_loses_nothing() -> None:
    # seed 108 over 20 s: gateway killed mid-upload (whole cluster restarted), a zone down
    # and back, a node killed and restarted; then heal, repair and verify.
    out = _chaos(["--duration", "20", "--seed", "108"])
    assert "faults kill_gateway" in out and "faults zone_down" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="partitions (iptables) and full disks (tmpfs "
                    "mounts) need root; CI runs as root")
def test_partition_and_full_disk_lose_nothing() -> None:
    # seed 5 over 16 s: zone az1 partitioned (packets dropped), then two nodes whose disks
    # are full for a few seconds each.
    out = _chaos(["--duration", "16", "--seed", "5", "--faults", "partition_zone,fill_disk"])
    assert "faults partition_zone     1" in out and "faults fill_disk          2" in out
    assert "skipped" not in out  # CI installs iptables: the partition really happened


@pytest.mark.skipif(os.geteuid() != 0, reason="a full metadata disk is a tmpfs mount: "
                    "root only; CI runs as root")
def test_full_metadata_disk_loses_nothing_and_kills_nothing() -> None:
    # seed 3 over 12 s: the metadata directory's file system full twice for a few seconds
    # under the running cluster (writes refused with 503), then freed with no restart; a
    # process that died meanwhile fails the run.
    out = _chaos(["--duration", "12", "--seed", "3", "--faults", "fill_meta"])
    assert re.search(r"faults fill_meta +2$", out, re.M), out[-2000:]
    assert "skipped" not in out


def test_lying_shards_and_zone_then_kills_lose_nothing() -> None:
    # seed 14 over 16 s: zone down (writes go on) and back, then one node killed in each
    # other zone and restarted; then two shard files rewritten with other bytes under valid
    # checksums while the workload reads and writes. Every read answers acknowledged bytes,
    # every stripe returns to k+m, and every lie a manifest still names is found (by a read
    # or the deep scrub) and rebuilt.
    out = _chaos(["--duration", "16", "--seed", "14", "--faults",
                  "kill_node,lying_shard,zone_then_kills"])
    assert re.search(r"lying shards injected +2$", out, re.M), out[-2000:]
    assert re.search(r"faults zone_then_kills +1$", out, re.M), out[-2000:]


def test_cluster_crash_and_open_uploads_lose_nothing() -> None:
    # seed 60 over 20 s: a node killed and restarted, then every process of the cluster
    # killed -9 at once and the cluster started again, a shard deleted, a lying shard;
    # the workload keeps multipart uploads open through all of it (an open upload's parts
    # are acknowledged data: repaired, scrubbed and counted like an object's stripes).
    out = _chaos(["--duration", "20", "--seed", "60", "--faults",
                  "crash_cluster,kill_node,lying_shard,delete_shard"])
    assert re.search(r"faults crash_cluster +1$", out, re.M), out[-2000:]
    assert re.search(r"ops open +[1-9]", out, re.M), out[-2000:]
