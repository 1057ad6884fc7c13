"""Races of the archive tier on real processes: lifecycle transitions against restores.

A transition (GLACIER -> DEEP_ARCHIVE) moves a version's data; a restore job or a restored
copy is the version's own state and must survive it. The cluster runs with 10-second days,
so the gateway's lifecycle worker makes a pass every second, and `tessera lifecycle run-once`
processes run beside it; restores are requested from several client threads meanwhile.
"""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster, wait_advancing, wait_for
from tests.integration.test_archive import DAY, RESTORE_RE, error, restore, restored

PAST = "2020-01-01T00:00:00Z"  # a transition Date already passed: due at once
KEEP_DAYS = 100  # of 10-second days: a restored copy that outlives the test
TO_DEEP = {"Rules": [{"ID": "deeper", "Status": "Enabled", "Filter": {"Prefix": ""},
                      "Transitions": [{"Date": PAST, "StorageClass": "DEEP_ARCHIVE"}]}]}


@pytest.fixture(scope="module")
def races(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_GC_GRACE_S", "1")
        c = LocalCluster(tmp_path_factory.mktemp("races"),
                         up_args=["--day-seconds", str(DAY)]).start()
    yield c
    c.stop()


def _class(s3: Any, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD")


def _expiry(header: str) -> float:
    m = RESTORE_RE.match(header)
    assert m, header
    return email.utils.parsedate_to_datetime(m.group(1)).timestamp()


def _run_once(c: LocalCluster) -> subprocess.Popen:
    env = {**os.environ, "TESSERA_CONFIG": c.env["TESSERA_CONFIG"]}
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "lifecycle", "run-once",
                             "--json"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _read_until(s3: Any, bucket: str, key: str, body: bytes, expiry: float) -> None:
    """Read `key` back until its restored copy's `expiry`: every read gives `body`, and a
    refusal comes only once the expiry has passed (a read a loaded box stretched past it)."""
    while time.time() < expiry - 1:
        try:
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            assert time.time() >= expiry, exc.response["Error"]
            return
        assert got == body
        time.sleep(0.5)  # pacing of the readability probe, not a synchronisation


def test_transition_keeps_restored_copy_and_accepted_restore(races: LocalCluster) -> None:
    s3 = races.client()
    b = "races"
    s3.create_bucket(Bucket=b)
    data = {k: os.urandom(150_000) for k in ("done", "ongoing")}
    for k, body in data.items():
        s3.put_object(Bucket=b, Key=k, Body=body, StorageClass="GLACIER")
    # Days=KEEP_DAYS: the copy outlives however long a loaded box takes to transition (a
    # one-day copy, 10-20 s, expired first at load); its expiry is shortened below
    assert restore(s3, "done", KEEP_DAYS, tier="Expedited", bucket=b) == 202
    header = wait_for(lambda: restored(s3, "done", bucket=b), what="first restore")
    assert restore(s3, "ongoing", tier="Bulk", bucket=b) == 202  # 5 s with 10-second days
    assert s3.head_object(Bucket=b, Key="ongoing")["Restore"] == 'ongoing-request="true"'
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration=TO_DEEP)
    wait_for(lambda: all(_class(s3, b, k) == "DEEP_ARCHIVE" for k in data),
             what="the lifecycle worker's transitions")
    # The restored copy is still there, with the same expiry, and readable.
    assert s3.head_object(Bucket=b, Key="done")["Restore"] == header
    assert s3.get_object(Bucket=b, Key="done")["Body"].read() == data["done"]
    # Asked again with Days=1 (200): the moved version's copy takes the new expiry, and is
    # readable until then
    assert restore(s3, "done", bucket=b) == 200  # (Expedited: none for DEEP_ARCHIVE)
    header = s3.head_object(Bucket=b, Key="done")["Restore"]
    expiry = _expiry(header)
    _read_until(s3, b, "done", data["done"], expiry)
    # The restore accepted before the transition completes (from the moved data).
    wait_for(lambda: restored(s3, "ongoing", bucket=b), what="accepted restore to complete")
    assert s3.get_object(Bucket=b, Key="ongoing")["Body"].read() == data["ongoing"]
    # The copy goes at its expiry date, not before.
    wait_for(lambda: "Restore" not in s3.head_object(Bucket=b, Key="done"),
             timeout=2 * DAY + 10, what="restored copy to expire")
    assert time.time() >= expiry
    status, err = error(lambda: s3.get_object(Bucket=b, Key="done"))
    assert (status, err["Code"]) == (403, "InvalidObjectState")


def test_concurrent_restores_and_transitions_all_complete(races: LocalCluster) -> None:
    s3 = races.client()
    b = "races-many"
    s3.create_bucket(Bucket=b)
    keys = [f"obj{i}" for i in range(8)]
    data = {k: os.urandom(60_000) for k in keys}
    for k in keys:
        s3.put_object(Bucket=b, Key=k, Body=data[k], StorageClass="GLACIER")
    early, late = keys[:4], keys[4:]
    # Days=KEEP_DAYS: every copy lives until all are done (one-day copies made early, 10-20
    # s, expired before a loaded box had made the last); expiry is not what this tests
    for k in early:  # accepted before any transition can run
        assert restore(s3, k, KEEP_DAYS, bucket=b) == 202
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration=TO_DEEP)
    procs = [_run_once(races) for _ in range(2)]  # beside the gateway's own lifecycle worker
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda k: restore(races.client(), k, KEEP_DAYS, bucket=b),
                              late))
    assert codes == [202] * len(late)
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    wait_advancing(lambda: ((n := sum(_class(s3, b, k) == "DEEP_ARCHIVE" for k in keys))
                            == len(keys), n), what="every transition")
    # as long as they keep completing (each job is due within 5 s, then a 60 kB copy; a loaded
    # machine stretches that many times over, a stuck job still fails)
    wait_advancing(lambda: ((n := sum(bool(restored(s3, k, bucket=b)) for k in keys))
                            == len(keys), n), what="every accepted restore to complete")
    for k in keys:
        assert s3.get_object(Bucket=b, Key=k)["Body"].read() == data[k]
