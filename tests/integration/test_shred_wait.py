"""The cluster's shred waiting period applies when the operator does not give one."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.integration.cluster import LocalCluster
from tests.integration.test_tenants import s3_for, tessera


def test_configured_waiting_period_delays_shred(
        gateway_set_cluster: Callable[..., LocalCluster]) -> None:
    c = gateway_set_cluster("shred_wait_s = 3600")
    assert tessera(c, "tenant", "create", "waity").returncode == 0
    key = json.loads(tessera(c, "key", "create", "--tenant", "waity", "--json").stdout)
    s3 = s3_for(c, key["access_key_id"], key["secret_access_key"])
    s3.create_bucket(Bucket="waity-bucket")
    s3.put_object(Bucket="waity-bucket", Key="k", Body=b"kept for now")
    r = tessera(c, "tenant", "shred", "waity", "--confirm", "waity", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "scheduled"
    # Nothing is destroyed during the waiting period, and the shred can be cancelled.
    assert s3.get_object(Bucket="waity-bucket", Key="k")["Body"].read() == b"kept for now"
    assert tessera(c, "tenant", "shred", "waity", "--cancel").returncode == 0
    assert s3.get_object(Bucket="waity-bucket", Key="k")["Body"].read() == b"kept for now"
