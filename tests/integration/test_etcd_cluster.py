"""`tessera up --metadata etcd`: S3 over a local three-member etcd cluster, surviving a member loss."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "data", metadata="etcd").start()
    yield c
    c.stop()


def _retry(fn, deadline_s: float = 20.0):  # noqa: ANN001, ANN202 - small test helper
    """Call fn until it succeeds: the first requests after a leader loss wait for an election."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_put_get_list_and_survive_etcd_member_loss(etcd_cluster: LocalCluster) -> None:
    toml = (etcd_cluster.data / "tessera.toml").read_text()
    assert 'backend = "etcd"' in toml
    for member in ("etcd-az1", "etcd-az2", "etcd-az3"):
        assert (etcd_cluster.data / "etcd" / member / "member").is_dir()
    s3 = etcd_cluster.client()
    s3.create_bucket(Bucket="etcd-bucket")
    body = bytes(range(256)) * 64
    for i in range(5):
        s3.put_object(Bucket="etcd-bucket", Key=f"k/{i}", Body=body)
    assert s3.get_object(Bucket="etcd-bucket", Key="k/3")["Body"].read() == body
    listed = s3.list_objects_v2(Bucket="etcd-bucket", Prefix="k/")
    assert [o["Key"] for o in listed["Contents"]] == [f"k/{i}" for i in range(5)]

    etcd_cluster.kill("etcd-az1")  # the first endpoint: clients must fail over
    _retry(lambda: s3.put_object(Bucket="etcd-bucket", Key="after", Body=b"still here"))
    assert s3.get_object(Bucket="etcd-bucket", Key="after")["Body"].read() == b"still here"
    assert s3.get_object(Bucket="etcd-bucket", Key="k/0")["Body"].read() == body
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="etcd-bucket")["Contents"]]
    assert keys == ["after"] + [f"k/{i}" for i in range(5)]
    s3.delete_object(Bucket="etcd-bucket", Key="after")
    assert "after" not in [o["Key"] for o in
                           s3.list_objects_v2(Bucket="etcd-bucket").get("Contents", [])]
