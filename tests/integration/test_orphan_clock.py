"""A clock stepped forward does not make the orphan sweep delete a write in flight (libfaketime).

Every process of the cluster runs under libfaketime reading one offset file (as in
test_archive_clock), and the offset is moved two days on. A shard file's mtime is the
kernel's real time, not the faked one, so a shard written after the move looks two days old
to its node (its faked clock less the real mtime): what a forward clock step of more than
the orphan grace (1 day, the default here) between a write's first shard and its commit
makes of it. The gateway's restore worker is held (its test hook, `TESSERA_TEST_RESTORE_HOLD`)
with a restored copy written and not committed (its shards indexed by nothing yet) while the
repair worker makes two orphan checks; released, the copy commits (its `WriteAge`, on the
monotonic clock, is seconds) and GET must read it whole. Before, the sweep trusted the
wall-clock age alone: it deleted the copy's shards during the hold, and the commit named
shards that were gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.testing.archive_holds import RESTORE_HOLD_ENV
from tests.integration.cluster import LocalCluster, fetch, wait_for
from tests.integration.test_archive_clock import DAY, Clock
from tests.integration.test_archive_clock import s3 as s3  # noqa: F401 - the fixture
from tests.integration.test_clock_skew import FAKETIME

BODY = os.urandom(8 * 2**20)  # shards of 2 MiB: files, over [packs] max_shard_bytes (1 MiB)

pytestmark = pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed "
                                "(Debian package faketime)")


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Clock:
    return Clock(tmp_path_factory.mktemp("orphan-clock") / "offset")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("orphan-clock-hold") / "release"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, clock: Clock, release: Path,
            ) -> Iterator[LocalCluster]:
    faked = {"LD_PRELOAD": str(FAKETIME), "FAKETIME_TIMESTAMP_FILE": str(clock.path),
             "FAKETIME_NO_CACHE": "1", RESTORE_HOLD_ENV: str(release),
             "TESSERA_REPAIR_SWEEP_S": "1"}  # (orphan checks every 5 s: ORPHAN_MIN_INTERVAL_S)
    saved = {k: os.environ.get(k) for k in faked}
    os.environ.update(faked)  # (only `tessera up`, started now, inherits it)
    try:
        c = LocalCluster(tmp_path_factory.mktemp("orphan-clock-cluster")).start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield c
    finally:
        release.touch()
        c.stop()


def counter(c: LocalCluster, name: str) -> float:
    """A counter of the gateway's admin /metrics (summed over its workers)."""
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def test_a_write_in_flight_survives_a_clock_step_past_the_orphan_grace(
        cluster: LocalCluster, clock: Clock, release: Path, s3: Any) -> None:
    s3.create_bucket(Bucket="orphan-clock")
    s3.put_object(Bucket="orphan-clock", Key="k", Body=BODY, StorageClass="GLACIER")
    assert s3.restore_object(Bucket="orphan-clock", Key="k", RestoreRequest={
        "Days": 30, "GlacierJobParameters": {"Tier": "Expedited"}}
    )["ResponseMetadata"]["HTTPStatusCode"] == 202
    clock.to(clock.now() + 2 * DAY)  # the job falls due; shards written now look 2 days old
    held = release.with_name(release.name + ".held")
    wait_for(held.exists, what="the restore worker to write its copy and hold", timeout=120)
    checks = counter(cluster, "tessera_repair_orphan_checks_total")
    deleted = counter(cluster, "tessera_repair_orphans_deleted_total")
    wait_for(lambda: counter(cluster, "tessera_repair_orphan_checks_total") >= checks + 2,
             what="two orphan checks while the copy is held", timeout=120)
    assert counter(cluster, "tessera_repair_orphans_deleted_total") == deleted, \
        "the orphan sweep deleted shards of the held copy"
    release.touch()

    def restored() -> bool:
        return 'ongoing-request="false"' in s3.head_object(Bucket="orphan-clock", Key="k").get(
            "Restore", "")

    wait_for(restored, what="the restore to commit", timeout=120)
    assert s3.get_object(Bucket="orphan-clock", Key="k")["Body"].read() == BODY
