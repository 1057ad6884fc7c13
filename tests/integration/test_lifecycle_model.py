"""Which versions survive N days of lifecycle passes: a model of S3's rules against a cluster.

Hypothesis draws a versioned bucket (Object Lock on or off), a few rules (prefix filter;
Expiration with Days or ExpiredObjectDeleteMarker; NoncurrentVersionExpiration with
NoncurrentDays and NewerNoncurrentVersions) and a history of PUTs (some under a legal hold) and
DELETEs (delete markers) on keys inside and outside the rules' prefixes. The history is written
through boto3 at the real time; then `tessera lifecycle run-once` runs under libfaketime at
noon of each following day (12 h from every midnight a Days action rounds up to, so a pass
never races a due time), and after every pass the bucket's versions must be exactly the
model's:

- a current version is due Days after its creation, rounded up to the next midnight UTC; it
  then gets a delete marker (its data stays, noncurrent from the marker's time);
- a delete marker that is its key's only version is removed by ExpiredObjectDeleteMarker, or
  once Days old by an Expiration with Days;
- a noncurrent version is removed NoncurrentDays after it became noncurrent (rounded up), but
  only beyond the NewerNoncurrentVersions newest noncurrent versions, and never while under a
  legal hold; a key outside every rule's prefix is never touched.

Bounded for CI (three histories written out below, each aimed at one rule, and
LIFECYCLE_MODEL_EXAMPLES=3 drawn ones); a long run by hand:

    LIFECYCLE_MODEL_EXAMPLES=100 python -m pytest -q tests/integration/test_lifecycle_model.py
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ops.admincli import admin_request
from tests.integration.cluster import LocalCluster, fetch, wait_for
from tests.integration.test_clock_skew import FAKETIME

DAY = 86400.0
PASSES = 5  # noon of each of the five days after the writes
KEYS = ("a/1", "a/2", "b/1", "c")
EXAMPLES = int(os.environ.get("LIFECYCLE_MODEL_EXAMPLES", "3"))

pytestmark = pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed "
                                "(Debian package faketime)")


@dataclass
class Rule:
    prefix: str
    exp_days: int | None
    eodm: bool
    nc_days: int | None
    newer: int | None

    def xml(self, i: int) -> dict[str, Any]:
        r: dict[str, Any] = {"ID": f"r{i}", "Filter": {"Prefix": self.prefix},
                             "Status": "Enabled"}
        if self.exp_days is not None:
            r["Expiration"] = {"Days": self.exp_days}
        elif self.eodm:
            r["Expiration"] = {"ExpiredObjectDeleteMarker": True}
        if self.nc_days is not None:
            r["NoncurrentVersionExpiration"] = {"NoncurrentDays": self.nc_days}
            if self.newer is not None:
                r["NoncurrentVersionExpiration"]["NewerNoncurrentVersions"] = self.newer
        return r


@dataclass
class Version:
    vid: str
    marker: bool
    lm: float  # LastModified (s)
    held: bool = False


def due(since: float, days: int) -> float:
    return math.ceil((since + days * DAY) / DAY) * DAY


def expected_pass(model: dict[str, list[Version]], rules: list[Rule], now: float,
                  ) -> dict[str, tuple[list[Version], bool]]:
    """Each key's versions after a pass at `now` (newest first) and whether the pass adds a
    delete marker on top, judged on the versions as they were when the pass began."""
    out: dict[str, tuple[list[Version], bool]] = {}
    for key, vs in model.items():
        rs = [r for r in rules if key.startswith(r.prefix)]
        keep, marker = list(vs), False
        if vs and vs[0].marker:
            if len(vs) == 1 and any(r.eodm or (r.exp_days is not None and
                                               due(vs[0].lm, r.exp_days) <= now) for r in rs):
                keep = []
        elif vs and any(r.exp_days is not None and due(vs[0].lm, r.exp_days) <= now
                        for r in rs):
            marker = True
        for i in range(1, len(vs)):
            v = vs[i]
            if v.held:
                continue
            if any(r.nc_days is not None and due(vs[i - 1].lm, r.nc_days) <= now and
                   (r.newer is None or i - 1 >= r.newer) for r in rs):
                keep.remove(v)
        out[key] = (keep, marker)
    return out


rule_st = st.builds(
    Rule, prefix=st.sampled_from(["", "a/", "b/"]),
    exp_days=st.one_of(st.none(), st.integers(1, 3)), eodm=st.booleans(),
    nc_days=st.one_of(st.none(), st.integers(1, 3)),
    newer=st.one_of(st.none(), st.integers(1, 2)),
).map(lambda r: Rule(r.prefix, r.exp_days, r.eodm and r.exp_days is None, r.nc_days,
                         r.newer)  # an Expiration holds Days or ExpiredObjectDeleteMarker
       ).filter(lambda r: r.exp_days is not None or r.eodm or r.nc_days is not None)
op_st = st.tuples(st.sampled_from(KEYS), st.sampled_from(["put", "put", "held", "delete"]))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Real 86400-second days, and the gateway's own lifecycle worker kept out of the way:
    some actions are due at once (ExpiredObjectDeleteMarker), so a pass of its own between
    a drawn `delete` and the listing would change what the model expects. It passes once at
    start (awaited here, before any bucket exists), then after `[archive]
    lifecycle_interval_s` capped at a quarter day: 6 h, longer than any run of this test.
    Only the faked passes move the clock on."""
    c = LocalCluster(tmp_path_factory.mktemp("lifecycle-model"),
                     first_config=lambda text: text + "\n[archive]\nlifecycle_interval_s = 1e9\n")
    c.start()
    try:
        assert admin_request("GET", "/queues", env=c.env)["lifecycle_interval_s"] == 1e9
        wait_for(lambda: gateway_metric(c, "tessera_lifecycle_passes_total") >= 1,
                 what="the gateway's lifecycle pass at start")
        yield c
    finally:
        c.stop()


def gateway_metric(c: LocalCluster, name: str) -> float:
    """A counter on the gateway's /metrics (the admin listener), summed over its workers."""
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
               if line.startswith(name))


def run_once_at(c: LocalCluster, when: float) -> None:
    """`tessera lifecycle run-once` with its wall clock at `when` (libfaketime)."""
    env = {**os.environ, "TESSERA_CONFIG": c.env["TESSERA_CONFIG"],
           "LD_PRELOAD": str(FAKETIME), "FAKETIME": f"+{int(when - time.time())}s"}
    out = subprocess.run([sys.executable, "-m", "ops.cli", "lifecycle", "run-once", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"errors": 0' in out.stdout, out.stdout


@dataclass(frozen=True)
class Listed:
    key: str
    marker: bool
    lm: float
    latest: bool


def listing(s3: Any, bucket: str) -> dict[str, Listed]:
    """The bucket's versions and delete markers by version id."""
    out: dict[str, Listed] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
            for v in page.get(kind, []):
                out[v["VersionId"]] = Listed(v["Key"], marker, v["LastModified"].timestamp(),
                                             v["IsLatest"])
    return out


@settings(max_examples=EXAMPLES, deadline=None, derandomize="LIFECYCLE_MODEL_EXAMPLES" not in
          os.environ, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
@given(rules=st.lists(rule_st, min_size=1, max_size=2), ops=st.lists(op_st, max_size=14),
       lock=st.booleans())
@example(rules=[Rule("a/", None, False, 1, 1)], lock=False,  # keep 1 newer noncurrent
         ops=[("a/1", "put")] * 4 + [("b/1", "put")] * 2 + [("a/2", "put"), ("a/2", "delete")])
@example(rules=[Rule("", 1, False, 2, None)], lock=True,  # markers, held versions
         ops=[("a/1", "put"), ("a/1", "held"), ("a/1", "put"), ("c", "delete"),
              ("b/1", "held"), ("b/1", "delete")])
@example(rules=[Rule("b/", None, True, 1, None), Rule("a/", 2, False, None, None)], lock=False,
         ops=[("b/1", "put"), ("b/1", "delete"), ("a/2", "delete"), ("a/1", "put"),
              ("c", "put"), ("c", "delete")])
def test_versions_surviving_days_match_the_model(cluster: LocalCluster, rules: list[Rule],
                                                 ops: list[tuple[str, str]], lock: bool,
                                                 ) -> None:
    s3 = cluster.client()
    bucket = f"lcm-{time.time_ns()}"
    if lock:
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    else:
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [r.xml(i) for i, r in enumerate(rules)]})
    model: dict[str, list[Version]] = {k: [] for k in KEYS}
    for key, op in ops:
        if op == "delete":
            vid = s3.delete_object(Bucket=bucket, Key=key)["VersionId"]
            model[key].insert(0, Version(vid, True, 0.0))
            continue
        held = op == "held" and lock
        extra = {"ObjectLockLegalHoldStatus": "ON"} if held else {}
        vid = s3.put_object(Bucket=bucket, Key=key, Body=key.encode(), **extra)["VersionId"]
        model[key].insert(0, Version(vid, False, 0.0, held))
    seen = listing(s3, bucket)
    for vs in model.values():
        for v in vs:
            v.lm = seen[v.vid].lm
    # a write within a few seconds of midnight could round up either way (listed times
    # lose the sub-second part): rare, and not what this test is about
    assume(all(v.lm % DAY > 5 for vs in model.values() for v in vs))
    start = math.ceil(max([time.time(), *(v.lm for vs in model.values() for v in vs)]) / DAY) \
        * DAY
    for day in range(PASSES):
        now = start + day * DAY + DAY / 2
        want = expected_pass(model, rules, now)
        run_once_at(cluster, now)
        seen = listing(s3, bucket)
        known = {v.vid for vs in model.values() for v in vs}
        fresh = {vid: s for vid, s in seen.items() if vid not in known}
        for key, (keep, marker) in want.items():
            if marker:  # the expiration's delete marker, made by this pass
                mine = [vid for vid, s in fresh.items() if s.key == key and s.marker]
                assert len(mine) == 1, (day, key, fresh)
                keep.insert(0, Version(mine[0], True, fresh[mine[0]].lm))
            model[key] = keep
        expect = {v.vid for vs in model.values() for v in vs}
        assert set(seen) == expect, (day, rules, ops, sorted(set(seen) ^ expect))
        for key, vs in model.items():
            if vs:
                assert seen[vs[0].vid].latest, (day, key, "latest")
