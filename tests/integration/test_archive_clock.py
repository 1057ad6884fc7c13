"""Archive transitions and restores over simulated days, the whole cluster under one faked clock.

Hypothesis draws the target class, the transition's Days, the restore's Days and tier (two
written-out examples plus ARCHIVE_CLOCK_EXAMPLES=2 drawn ones, derandomized; a long run by
hand: ARCHIVE_CLOCK_EXAMPLES=30).

Every process of the cluster (`tessera up`, its nodes and gateway) runs under libfaketime
reading one offset file (FAKETIME_TIMESTAMP_FILE, re-read at every clock call), so nodes and
gateway agree on the time (node requests are authenticated with it) and the test moves them
all on together; boto3 signs with the same offset. A rule transitions objects to GLACIER or
DEEP_ARCHIVE after Days; at noon of each following day (12 h from every midnight a due time
is rounded to, so no step races one) the gateway's own lifecycle worker, passing every
`PASS_EVERY_S`, makes a whole pass and each object must be what a model of S3 says:

- the transition is due Days after creation, rounded up to the next midnight UTC; objects
  under 128 KiB are not transitioned (`all_storage_classes_128K`, S3's default since 2024,
  named in the request: Tessera's own default is `varies_by_storage_class`, README); once
  archived, GET is 403
  InvalidObjectState and HEAD names the class;
- RestoreObject (its tier's latency: `LATENCY`) answers 202, HEAD shows
  `ongoing-request="true"` until the latency has passed, then GET reads the data and
  `x-amz-restore` carries `expiry-date`: completion + Days rounded up to the next midnight
  UTC (S3 User Guide, "Restoring an archived object"); at noon before that date the copy is
  still readable, at noon after it GET is 403 again and `x-amz-restore` is gone.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.integration.cluster import LocalCluster, fetch, wait_for
from tests.integration.test_clock_skew import FAKETIME

DAY = 86400.0
# Shard files' mtimes are the kernel's real time, not the faked one: after a move of a day
# a shard written a second ago looks a day old, and the orphan sweep (grace 1 day) deleted
# a transition's new shards before their commit named them. A year: no move reaches it.
ORPHAN_GRACE_S = 365 * 86400
PASS_EVERY_S = 2  # the gateway's lifecycle pause (real seconds: the offset holds between moves)
BODY = 200 * 1024  # over the 128 KiB below which S3 transitions nothing by default
LATENCY = {("GLACIER", "Expedited"): 300.0, ("GLACIER", "Standard"): 4 * 3600.0,
           ("GLACIER", "Bulk"): 12 * 3600.0, ("DEEP_ARCHIVE", "Standard"): 12 * 3600.0,
           ("DEEP_ARCHIVE", "Bulk"): 48 * 3600.0}  # Tessera's [archive] defaults, in AWS's ranges
EXAMPLES = int(os.environ.get("ARCHIVE_CLOCK_EXAMPLES", "2"))

pytestmark = pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed "
                                "(Debian package faketime)")


class Clock:
    """The cluster's faked wall clock: an offset (s) from the real one, in one file."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.clients: list[Any] = []  # boto3 clients whose kept-alive connections a move drops
        self.set(0)

    def set(self, offset: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"+{offset}s\n")
        os.replace(tmp, self.path)  # every process reads the old or the new offset whole
        self.offset = offset
        # libfaketime moves the servers' monotonic clocks too, so a jump fires their
        # keep-alive timers: a connection kept alive across it is closed by the gateway as
        # the client reuses it (a reset in CI once clients no longer retried). Open new ones.
        for client in self.clients:
            client._endpoint.http_session.close()

    def now(self) -> float:
        return time.time() + self.offset

    def to(self, when: float) -> None:
        """Move the cluster's clock on to `when` (never back)."""
        assert when > self.now()
        self.set(math.ceil(when - time.time()))


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Clock:
    return Clock(tmp_path_factory.mktemp("archive-clock") / "offset")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, clock: Clock) -> Iterator[LocalCluster]:
    faked = {"LD_PRELOAD": str(FAKETIME), "FAKETIME_TIMESTAMP_FILE": str(clock.path),
             "FAKETIME_NO_CACHE": "1"}
    saved = {k: os.environ.get(k) for k in faked}
    os.environ.update(faked)  # (only `tessera up`, started now, inherits it)
    try:
        c = LocalCluster(tmp_path_factory.mktemp("archive-clock-cluster"), first_config=lambda
                         text: text + f"\n[archive]\nlifecycle_interval_s = {PASS_EVERY_S}\n"
                         f"\n[repair]\norphan_grace_s = {ORPHAN_GRACE_S}\n")
        c.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        wait_for(lambda: passes(c) >= 1, what="the gateway's lifecycle pass at start")
        yield c
    finally:
        c.stop()


@pytest.fixture
def s3(cluster: LocalCluster, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """boto3 signing with the cluster's faked time."""
    def now(remove_tzinfo: bool = True) -> datetime.datetime:
        t = datetime.datetime.fromtimestamp(clock.now(), datetime.UTC)
        return t.replace(tzinfo=None) if remove_tzinfo else t
    monkeypatch.setattr(botocore.auth, "get_current_datetime", now)
    with contextlib.suppress(ImportError):  # (botocore signs with awscrt when installed)
        from botocore.crt import auth as crt_auth

        monkeypatch.setattr(crt_auth, "get_current_datetime", now)
    client = cluster.client()
    clock.clients.append(client)
    yield client
    clock.clients.remove(client)


def passes(c: LocalCluster) -> float:
    """Lifecycle passes the gateway finished (its admin /metrics, summed over workers)."""
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
               if line.startswith("tessera_lifecycle_passes_total"))


def noon_after(t: float, days: int) -> float:
    """Noon UTC of the `days`-th day after the day of `t`."""
    return (math.floor(t / DAY) + days) * DAY + DAY / 2


def next_midnight(t: float) -> float:
    return math.ceil(t / DAY) * DAY


def last_pass_started(c: LocalCluster) -> float:
    """When the last lifecycle pass the gateway finished began (its faked clock; the
    latest over its workers)."""
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    return max([float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
                if line.startswith("tessera_lifecycle_last_pass_started_seconds")] or [0.0])


def day_pass(c: LocalCluster, clock: Clock, when: float) -> None:
    """Move the clock on to `when` and wait for a whole lifecycle pass begun after it: one
    that began at `when` or later by the cluster's clock (`Clock.to` never moves back, so
    every pass begun before the move began before `when`; a pass the jump cuts short, its
    worker's lease timed out by the jump, does not finish and is not counted)."""
    clock.to(when)
    wait_for(lambda: last_pass_started(c) >= when,
             what="a lifecycle pass begun after the clock moved", timeout=120)


def state(s3: Any, bucket: str, key: str) -> tuple[str, str | None, bool]:
    """(storage class, x-amz-restore, readable by GET)."""
    try:
        h = s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        try:
            s3.get_object(Bucket=bucket, Key=key)
        except ClientError as e:
            raise AssertionError(repr(e.response)) from None
        raise
    try:
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        readable = True
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidObjectState", e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        readable = False
    return h.get("StorageClass", "STANDARD"), h.get("Restore"), readable


@settings(max_examples=EXAMPLES, deadline=None, derandomize="ARCHIVE_CLOCK_EXAMPLES" not in
          os.environ, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
@given(target=st.sampled_from(["GLACIER", "DEEP_ARCHIVE"]), days=st.integers(0, 3),
       restore_days=st.integers(1, 3), tier=st.sampled_from(["Expedited", "Standard", "Bulk"]))
@example(target="GLACIER", days=1, restore_days=1, tier="Standard")
@example(target="DEEP_ARCHIVE", days=2, restore_days=2, tier="Bulk")
def test_transition_restore_and_expiry_on_the_right_days(cluster: LocalCluster, clock: Clock,
                                                         s3: Any, target: str, days: int,
                                                         restore_days: int, tier: str) -> None:
    assume((target, tier) in LATENCY)  # (DEEP_ARCHIVE has no Expedited tier)
    latency = LATENCY[(target, tier)]
    bucket = f"arc-{target.lower().replace('_', '')}-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_lifecycle_configuration(  # (AWS's default since 2024, named: not ours)
        Bucket=bucket, TransitionDefaultMinimumObjectSize="all_storage_classes_128K",
        LifecycleConfiguration={"Rules": [
            {"ID": "a", "Filter": {"Prefix": ""}, "Status": "Enabled",
             "Transitions": [{"Days": days, "StorageClass": target}]}]})
    s3.put_object(Bucket=bucket, Key="big", Body=os.urandom(BODY))
    s3.put_object(Bucket=bucket, Key="small", Body=b"x" * 1000)
    created = s3.head_object(Bucket=bucket, Key="big")["LastModified"].timestamp()
    due = next_midnight(created + days * DAY)
    day = 1
    while noon_after(created, day) < due:  # the days before the transition is due
        day_pass(cluster, clock, noon_after(created, day))
        assert state(s3, bucket, "big") == ("STANDARD", None, True), day
        day += 1
    day_pass(cluster, clock, noon_after(created, day))
    assert state(s3, bucket, "big") == (target, None, False)
    assert state(s3, bucket, "small") == ("STANDARD", None, True)  # under 128 KiB
    # restore at 18:00 (so neither tier's latency ends near a midnight): 202, in progress
    # until the latency has passed
    clock.to(noon_after(created, day) + DAY / 4)
    r = s3.restore_object(Bucket=bucket, Key="big", RestoreRequest={
        "Days": restore_days, "GlacierJobParameters": {"Tier": tier}})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert state(s3, bucket, "big") == (target, 'ongoing-request="true"', False)
    asked = clock.now()
    clock.to(asked + latency + 60)
    wait_for(lambda: 'ongoing-request="false"' in (state(s3, bucket, "big")[1] or ""),
             what="the restore's completion")
    cls, restore, readable = state(s3, bucket, "big")
    assert (cls, readable) == (target, True)
    # expiry: completion (after `asked` + latency, before now) + Days, to the next midnight
    expiry = next_midnight(asked + latency + restore_days * DAY)
    assert restore == ('ongoing-request="false", expiry-date="'
                       f'{time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(expiry))}"')
    day_pass(cluster, clock, expiry - DAY / 2)  # noon before: still readable
    assert state(s3, bucket, "big") == (target, restore, True)
    clock.to(expiry + DAY / 2)  # noon after: the restore worker retired the copy
    wait_for(lambda: state(s3, bucket, "big") == (target, None, False),
             what="the restored copy's expiry")
