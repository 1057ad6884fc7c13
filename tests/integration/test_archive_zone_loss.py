"""Archive tier under a zone loss: a GLACIER object restores and reads with az1 down, and a
lifecycle transition that cannot reach a write quorum of archive nodes leaves the object whole
in STANDARD until a node is back (a cluster of its own: the test kills nodes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster, stop_processes, wait_for
from tests.integration.test_archive import KNOWN, restore, restored, run_once, start_cluster


def test_zone_loss_restore_and_read(tmp_path: Path) -> None:
    c = start_cluster(tmp_path / "zone")
    restarted: list[subprocess.Popen] = []
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="arch-zone")
        data = os.urandom(500_000) + KNOWN * 20000
        s3.put_object(Bucket="arch-zone", Key="obj", Body=data, StorageClass="GLACIER")
        for name in ("n1", "n2", "n3", "a1", "a2"):  # all of az1
            c.kill(name, signal.SIGKILL)
        status = wait_for(lambda: _try(lambda: restore(s3, "obj", tier="Expedited",
                                                       bucket="arch-zone")),
                          what="restore accepted")
        assert status == 202
        wait_for(lambda: restored(s3, "obj", bucket="arch-zone"), timeout=60,
                 what="restore under a zone loss")
        assert s3.get_object(Bucket="arch-zone", Key="obj")["Body"].read() == data
        _transition_with_archive_nodes_down(c, s3, restarted)
    finally:
        c.stop()
        stop_processes(restarted)


def _transition_with_archive_nodes_down(c: LocalCluster, s3: Any,
                                        restarted: list[subprocess.Popen]) -> None:
    """With az1 down and a3 killed, 3 archive nodes are left (< write quorum 4): the
    transition fails and the object stays whole in STANDARD; once a3 is back it moves."""
    data = os.urandom(300_000)
    s3.put_object(Bucket="arch-zone", Key="t/obj", Body=data)
    c.kill("a3", signal.SIGKILL)
    today = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime())
    s3.put_bucket_lifecycle_configuration(Bucket="arch-zone", LifecycleConfiguration={
        "Rules": [{"ID": "t", "Status": "Enabled", "Filter": {"Prefix": "t/"},
                   "Transitions": [{"Date": today, "StorageClass": "GLACIER"}]}]})
    out = json.loads(run_once(c))
    assert out["transitioned"] == 0
    assert "StorageClass" not in s3.head_object(Bucket="arch-zone", Key="t/obj")
    assert s3.get_object(Bucket="arch-zone", Key="t/obj")["Body"].read() == data
    restarted.append(c.restart_node("a3"))

    def moved() -> bool:
        run_once(c)
        return s3.head_object(Bucket="arch-zone", Key="t/obj").get("StorageClass") == "GLACIER"

    wait_for(moved, timeout=60, what="transition once a3 is back")
    assert restore(s3, "t/obj", tier="Expedited", bucket="arch-zone") == 202
    wait_for(lambda: restored(s3, "t/obj", bucket="arch-zone"), what="restore")
    assert s3.get_object(Bucket="arch-zone", Key="t/obj")["Body"].read() == data


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ClientError:
        return None
