"""Gateways whose clocks disagree still order a key's versions as they were written.

A second gateway runs against the same cluster under libfaketime, its clock 120 s ahead (inside
SigV4's 15 minutes and the node request window, so every request of it is served): the skew of
an unsynced host, or of this gateway before its clock stepped back. Versions written through it
must not be listed above versions written after them through the gateway with the right clock:
that listing made the older version "latest", and deleting the current version by id made it
current again (an older body, or a deleted key, came back).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ops.admincli import admin_request
from tests.integration.cluster import LocalCluster, free_port, stop_processes, wait_for

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SKEW = "+120s"

pytestmark = pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed "
                                "(Debian package faketime)")


def skewed_env(skew: str) -> dict[str, str]:
    """This process's environment for a child whose clocks run `skew` ("+120s") off: wall
    and monotonic clocks alike (with FAKETIME_DONT_FAKE_MONOTONIC libfaketime 0.9.10 fails
    Python's time.sleep with EINVAL)."""
    return {**os.environ, "LD_PRELOAD": str(FAKETIME), "FAKETIME": skew}


class SkewedGateway:
    """A gateway process of `cluster` (same config) whose wall clock is `skew` off."""

    def __init__(self, cluster: LocalCluster, skew: str) -> None:
        self.cluster, self.port = cluster, free_port()
        env = skewed_env(skew)
        log = cluster.data / "logs" / "skewed-gateway.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(cluster.data / "tessera.toml"),
             "--listen", f"127.0.0.1:{self.port}", "--admin-listen",
             f"127.0.0.1:{free_port()}", "--log-file", str(log)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        try:  # (its own session: nothing else would stop it if this raised)
            assert self.proc.stdout is not None
            first = self.proc.stdout.readline()  # its first line says it is ready, or why not
            assert "gateway ready" in first, first + self._rest()
        except BaseException:
            self.stop()
            raise

    def _rest(self) -> str:
        """What it printed after its first line, once it is stopped (it may still run)."""
        self.stop()
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def client(self):  # type: ignore[no-untyped-def]
        real = self.cluster.endpoint
        try:
            self.cluster.env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{self.port}"
            return self.cluster.client()
        finally:
            self.cluster.env["AWS_ENDPOINT_URL"] = real

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        stop_processes([self.proc])


@pytest.fixture(scope="module")
def skew_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("skew")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def gateways(skew_cluster: LocalCluster) -> Iterator[tuple[object, object]]:
    """(client of the gateway with the right clock, client of the one 120 s ahead)."""
    skewed = SkewedGateway(skew_cluster, SKEW)
    try:
        yield skew_cluster.client(), skewed.client()
    finally:
        skewed.stop()


def _versioned_bucket(s3) -> str:  # type: ignore[no-untyped-def]
    name = f"skew-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _listed(s3, bucket: str) -> list[tuple[str, bool]]:  # type: ignore[no-untyped-def]
    """(version id, IsLatest) in the order the XML lists versions and markers."""
    url = s3.generate_presigned_url("list_object_versions", Params={"Bucket": bucket})
    with urllib.request.urlopen(url) as r:  # (boto3 splits versions from markers)
        root = ET.fromstring(r.read())
    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    return [(e.find(f"{ns}VersionId").text, e.find(f"{ns}IsLatest").text == "true")
            for e in root if e.tag in (f"{ns}Version", f"{ns}DeleteMarker")]


def test_a_version_written_later_through_a_slower_clock_is_the_latest(gateways) -> None:
    """v0 through the fast clock, then v1 and v2 through the right one: v2 is listed first
    and latest, and deleting it by id makes v1 current, not v0."""
    s3, fast = gateways
    bucket = _versioned_bucket(s3)
    v0 = fast.put_object(Bucket=bucket, Key="k", Body=b"v0")["VersionId"]
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"v2")["VersionId"]
    assert _listed(s3, bucket) == [(v2, True), (v1, False), (v0, False)]
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    for client in (s3, fast):
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v1"
    assert _listed(fast, bucket) == [(v1, True), (v0, False)]


def test_a_deleted_key_stays_deleted_after_its_newer_version_is_removed(gateways) -> None:
    """v0 through the fast clock, a delete marker and v2 through the right one; deleting v2
    by id leaves the marker current: the key is still deleted."""
    s3, fast = gateways
    bucket = _versioned_bucket(s3)
    v0 = fast.put_object(Bucket=bucket, Key="k", Body=b"v0")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"v2")["VersionId"]
    assert _listed(s3, bucket) == [(v2, True), (marker, False), (v0, False)]
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    for client in (s3, fast):
        with pytest.raises(ClientError) as e:
            client.get_object(Bucket=bucket, Key="k")
        assert e.value.response["Error"]["Code"] == "NoSuchKey"
        assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == (
            "true")
    assert _listed(s3, bucket) == [(marker, True), (v0, False)]


def test_a_delete_marker_written_through_a_slower_clock_is_the_latest(gateways) -> None:
    """v0 through the fast clock, then a delete marker through the right one: the marker is
    listed first and latest (ListObjectVersions said v0 was the latest)."""
    s3, fast = gateways
    bucket = _versioned_bucket(s3)
    v0 = fast.put_object(Bucket=bucket, Key="k", Body=b"v0")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    assert _listed(s3, bucket) == [(marker, True), (v0, False)]


def test_a_node_whose_clock_is_outside_the_window_is_down_and_says_why(
        skew_cluster: LocalCluster) -> None:
    """A node whose clock runs 400 s behind refuses every gateway request (the node request
    window is 300 s): the cluster serves without it, and the node's last error in the
    status names the window, so the operator looks at its clock (it said "health 401").
    Last in the module: the node stays down."""
    c = skew_cluster
    c.kill("n9")
    node = subprocess.Popen(
        [sys.executable, "-m", "nodes", "--config", str(c.data / "tessera.toml"), "--id", "n9"],
        env=skewed_env("-400s"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        assert "ready" in line, line

        def said() -> str:
            nodes = admin_request("GET", "/status", env=c.env)["nodes"]
            n9 = next(n for n in nodes if n["id"] == "n9")
            return n9["state"] != "up" and n9["last_error"] or ""
        wait_for(lambda: "replay window" in said(), "n9 down for its clock", timeout=120)
        s3 = c.client()
        s3.create_bucket(Bucket="skewed-node")
        body = os.urandom(1 << 20)  # erasure-coded over the other nodes
        s3.put_object(Bucket="skewed-node", Key="k", Body=body)
        assert s3.get_object(Bucket="skewed-node", Key="k")["Body"].read() == body
    finally:
        node.kill()
        node.wait()
