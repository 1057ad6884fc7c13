"""A stateful test of the archive tier and lifecycle against a model, on a real cluster.

Hypothesis drives writes (STANDARD or GLACIER), deletes (markers), version deletes, copies,
restores, reads and lifecycle steps on one versioned bucket; every answer is checked against
the model: the exact bytes, or the exact S3 error (NoSuchKey, InvalidObjectState,
MethodNotAllowed), and RestoreObject's 202 / 200 / 403.

The lifecycle day is 0.1 s while the machine runs (passes run back to back). A lifecycle step
puts rules in force, waits (polling the version listing, with a deadline) for the fixed point
the model predicts, removes the rules, then waits until a pass begun after their removal has
run (a sentinel object expires): between steps no rule is in force, so every other answer is
exact. Rules: `e/` keys expire (current and noncurrent versions, then
the sole marker: nothing is left); `g/` keys move to GLACIER (current and noncurrent); `k/`
keys are never touched. Every example starts from seeded objects (SEED: each key, some
GLACIER, second versions on `e/` and `g/`) and a lifecycle step runs only when the model
holds something; the run is derandomized and, at its end, must have seen an expiry, a
transition, reads, copies and restores (a run that checks nothing fails). A restore is
waited for; its copy's expiry is taken from `x-amz-restore` and reads near it (SLACK_S)
accept either answer.
"""

from __future__ import annotations

import email.utils
import os
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ops.admincli import admin_request
from tests.integration.cluster import LocalCluster, wait_for

KEYS = [f"{p}/{n}" for p in ("e", "g", "k") for n in ("a", "b")]
SLACK_S = 2.0  # a read this close to a restored copy's expiry may see either state
RULES = [
    {"ID": "expire", "Filter": {"Prefix": "e/"}, "Status": "Enabled",
     "Expiration": {"Days": 1}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
    {"ID": "archive", "Filter": {"Prefix": "g/"}, "Status": "Enabled",
     "Transitions": [{"Days": 0, "StorageClass": "GLACIER"}],
     "NoncurrentVersionTransitions": [{"NoncurrentDays": 1, "StorageClass": "GLACIER"}]},
]
EXAMPLES = int(os.environ.get("ARCHIVE_MODEL_EXAMPLES", "5"))
STEPS = int(os.environ.get("ARCHIVE_MODEL_STEPS", "10"))
WAIT_S = 20.0  # a lifecycle fixed point is reached in about a second: a wrong one shrinks fast
# seeded in every example (key, GLACIER?), oldest first: second versions on e/ and g/
SEED = [("e/a", False), ("e/a", True), ("e/b", False), ("g/a", False), ("g/a", False),
        ("g/b", True), ("k/a", True), ("k/b", False)]


@dataclass
class Version:
    vid: str
    data: bytes | None = field(repr=False)  # None: a delete marker
    cls: str = "STANDARD"
    restored_until: float | None = None  # a restored copy's expiry (x-amz-restore)

    def readable(self, now: float) -> bool | None:
        """True/False: a GET answers bytes / InvalidObjectState; None: too close to tell."""
        if self.cls != "GLACIER":
            return True
        if self.restored_until is None:
            return False
        if abs(self.restored_until - now) < SLACK_S:
            return None
        return now < self.restored_until


@dataclass
class Model:
    keys: dict[str, list[Version]] = field(default_factory=dict)  # newest first

    def current(self, key: str) -> Version | None:
        vs = self.keys.get(key) or []
        return vs[0] if vs else None


def code(e: ClientError) -> tuple[int, str]:
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]


class ArchiveMachine(RuleBasedStateMachine):
    cluster: LocalCluster  # set by `machine_for`
    s3: Any
    runs = 0
    seen: dict[str, int]  # what the run exercised (set by `run_model`, checked at its end)

    @initialize()
    def setup(self) -> None:
        type(self).runs += 1
        self.bucket = f"model-{os.getpid()}-{type(self).runs}-{os.urandom(3).hex()}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_bucket_versioning(Bucket=self.bucket,
                                      VersioningConfiguration={"Status": "Enabled"})
        # a sentinel bucket whose objects expire at once: one gone proves a lifecycle pass
        # began after it was written (passes run one at a time)
        self.s3.create_bucket(Bucket=self.bucket + "-s")
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=self.bucket + "-s", LifecycleConfiguration={"Rules": [
                {"ID": "now", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1}}]})
        admin_request("PUT", "/config/lifecycle.day_seconds", {"value": 0.1},
                      env=self.cluster.env)
        self.model = Model()
        self.n = 0
        for key, glacier in SEED:
            self._put(key, glacier, 3000)

    def teardown(self) -> None:
        if hasattr(self, "model"):
            admin_request("DELETE", "/config/lifecycle.day_seconds", env=self.cluster.env)

    # writes ------------------------------------------------------------------------------

    @rule(key=st.sampled_from(KEYS), glacier=st.booleans(), size=st.sampled_from([1, 3000]))
    def put(self, key: str, glacier: bool, size: int) -> None:
        self._put(key, glacier, size)

    def _put(self, key: str, glacier: bool, size: int) -> None:
        self.n += 1
        data = (f"{key}#{self.n}|".encode() * size)[:size * 8]
        cls = "GLACIER" if glacier else "STANDARD"
        r = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, StorageClass=cls)
        self.model.keys.setdefault(key, []).insert(0, Version(r["VersionId"], data, cls))

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        r = self.s3.delete_object(Bucket=self.bucket, Key=key)
        assert r.get("DeleteMarker") is True
        self.model.keys.setdefault(key, []).insert(0, Version(r["VersionId"], None))

    @rule(key=st.sampled_from(KEYS), pick=st.integers(0, 5))
    def delete_version(self, key: str, pick: int) -> None:
        vs = self.model.keys.get(key) or []
        if not vs:
            return
        v = vs[pick % len(vs)]
        self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=v.vid)
        vs.remove(v)

    @rule(src=st.sampled_from(KEYS), dst=st.sampled_from(KEYS), pick=st.integers(0, 5))
    def copy(self, src: str, dst: str, pick: int) -> None:
        vs = [v for v in self.model.keys.get(src) or [] if v.data is not None]
        if not vs or src == dst:
            return
        v = vs[pick % len(vs)]
        ok = v.readable(time.time())
        try:
            r = self.s3.copy_object(Bucket=self.bucket, Key=dst, CopySource={
                "Bucket": self.bucket, "Key": src, "VersionId": v.vid})
        except ClientError as e:
            assert ok is not True and code(e) == (403, "InvalidObjectState"), (v, code(e))
            return
        assert ok is not False, f"copied an archived, unrestored version {v}"
        self.seen["copy"] += 1
        self.model.keys.setdefault(dst, []).insert(0, Version(r["VersionId"], v.data))

    # restores and reads ------------------------------------------------------------------

    def _restored_header(self, key: str, vid: str) -> str:
        h = self.s3.head_object(Bucket=self.bucket, Key=key, VersionId=vid)
        return h.get("Restore") or ""

    @rule(key=st.sampled_from(KEYS), pick=st.integers(0, 5))
    def restore(self, key: str, pick: int) -> None:
        vs = [v for v in self.model.keys.get(key) or [] if v.data is not None]
        if not vs:
            return
        v = vs[pick % len(vs)]
        state = v.readable(time.time())
        try:
            r = self.s3.restore_object(Bucket=self.bucket, Key=key, VersionId=v.vid,
                                       RestoreRequest={"Days": 1, "GlacierJobParameters":
                                                       {"Tier": "Expedited"}})
        except ClientError as e:
            assert v.cls != "GLACIER" and code(e) == (403, "InvalidObjectState"), (v, code(e))
            return
        assert v.cls == "GLACIER", f"restore of a {v.cls} version accepted"
        self.seen["restore"] += 1
        status = r["ResponseMetadata"]["HTTPStatusCode"]
        assert status in {None: (200, 202), True: (200,), False: (202,)}[state], (v, status)
        header = wait_for(lambda: (h := self._restored_header(key, v.vid)).startswith(
            'ongoing-request="false"') and h, what="restore", timeout=60)
        v.restored_until = email.utils.parsedate_to_datetime(
            header.split('expiry-date="')[1].rstrip('"')).timestamp()

    @rule(key=st.sampled_from(KEYS), pick=st.integers(0, 6))
    def read(self, key: str, pick: int) -> None:
        vs = self.model.keys.get(key) or []
        named = pick < len(vs)
        v = vs[pick] if named else (vs[0] if vs else None)
        kw = {"VersionId": v.vid} if named and v is not None else {}
        want = v.readable(time.time()) if v is not None and v.data is not None else None
        self.seen["read"] += 1
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=key, **kw)
        except ClientError as e:
            if v is None or v.data is None:
                assert code(e) == ((405, "MethodNotAllowed") if named else
                                   (404, "NoSuchKey")), (v, code(e))
            else:
                assert want is not True and code(e) == (403, "InvalidObjectState"), (v, code(e))
            return
        assert v is not None and v.data is not None and want is not False, (key, v)
        assert got["Body"].read() == v.data
        assert got["VersionId"] == v.vid
        assert got.get("StorageClass", "STANDARD") == v.cls

    # lifecycle ---------------------------------------------------------------------------

    def _listing(self) -> list[tuple[str, str, bool, str]]:
        r = self.s3.list_object_versions(Bucket=self.bucket)
        out = [(x["Key"], x["VersionId"], False, x["StorageClass"])
               for x in r.get("Versions", [])]
        out += [(x["Key"], x["VersionId"], True, "") for x in r.get("DeleteMarkers", [])]
        assert not r["IsTruncated"]
        return sorted(out)

    def _expected(self) -> list[tuple[str, str, bool, str]]:
        return sorted((k, v.vid, v.data is None, "" if v.data is None else v.cls)
                      for k, vs in self.model.keys.items() for v in vs)

    @precondition(lambda self: any(self.model.keys.values()))
    @rule()
    def lifecycle(self) -> None:
        for key, vs in self.model.keys.items():
            if key.startswith("e/"):
                self.seen["expired"] += len(vs)
                vs.clear()
            elif key.startswith("g/"):
                for v in vs:
                    if v.data is not None and v.cls != "GLACIER":
                        self.seen["transitioned"] += 1
                        v.cls = "GLACIER"
        self.s3.put_bucket_lifecycle_configuration(Bucket=self.bucket,
                                                   LifecycleConfiguration={"Rules": RULES})
        try:
            want = self._expected()
            wait_for(lambda: self._listing() == want, timeout=WAIT_S,
                     what=f"the lifecycle fixed point {want}")
        finally:
            self.s3.delete_bucket_lifecycle(Bucket=self.bucket)
        # a pass that read the rules may still run: wait for one begun after their removal
        self.s3.put_object(Bucket=self.bucket + "-s", Key="s", Body=b"s")
        wait_for(lambda: not self.s3.list_objects_v2(Bucket=self.bucket + "-s").get("Contents"),
                 timeout=60, what="a lifecycle pass begun after the rules were removed")
        assert self._listing() == want  # nothing moved once the rules were gone

    @invariant()
    def listing_matches(self) -> None:
        if hasattr(self, "model"):
            assert self._listing() == self._expected()


def run_model(cluster: LocalCluster, s3: Any) -> None:
    """Run the machine on a running cluster (EXAMPLES runs of up to STEPS steps each; the
    ARCHIVE_MODEL_EXAMPLES and ARCHIVE_MODEL_STEPS give a long run)."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    seen = dict.fromkeys(("expired", "transitioned", "read", "copy", "restore"), 0)
    bound = type("BoundArchiveMachine", (ArchiveMachine,),
                 {"cluster": cluster, "s3": s3, "seen": seen})
    try:
        run_state_machine_as_test(bound, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            derandomize=True, database=None, suppress_health_check=list(HealthCheck)))
    finally:  # the real day again, whatever happened
        admin_request("DELETE", "/config/lifecycle.day_seconds", env=cluster.env)
    assert all(seen.values()), f"the model run exercised too little: {seen}"
