"""A stateful property test of Object Lock against a model of one key's versions and their
locks: puts with and without lock headers (an anonymous one refused), deletes of versions by the owner and by an
anonymous caller (the bucket is public-read-write), with and without
`x-amz-bypass-governance-retention`, retention changes, legal holds, a bucket policy that
denies s3:BypassGovernanceRetention coming and going, delete markers, copies of older
versions, and attempts to suspend versioning. After every step the listing holds exactly the
versions the model keeps, each with the lock the model gives it; a locked version is never
lost. Real S3 pipeline (`S3Server` over a wired `Cluster`, in-memory nodes, SQLite) served
from a thread of its own, driven through boto3. A long run by hand:
    LOCK_MODEL_EXAMPLES=200 LOCK_MODEL_STEPS=40 python -m pytest -q \\
        tests/unit/test_object_lock_model.py
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import random
import threading
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ops.botoconfig import no_retries
from storage import version_ids
from storage.testing.simnodes import SimNodes
from tests.inproc import error_code, served_s3, sim_config, wired_cluster

UTC = datetime.UTC
DATES = [datetime.datetime(y, 1, 1, tzinfo=UTC) for y in (2090, 2095, 2100)]
GOV, COMP = "GOVERNANCE", "COMPLIANCE"
KEY = "k"
EXAMPLES = int(os.environ.get("LOCK_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("LOCK_MODEL_STEPS", "20"))


@dataclass
class Locked:
    body: bytes
    mode: str | None = None
    until: datetime.datetime | None = None
    hold: bool = False


@contextlib.asynccontextmanager
async def _gateway(data: Path) -> AsyncIterator[Any]:
    cfg = sim_config(data, 4096)
    async with wired_cluster(data, cfg, SimNodes(list(cfg.nodes))) as cluster:
        cred = await cluster.tenants.create_key("t")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            yield s3


@contextlib.contextmanager
def _served(data: Path) -> Iterator[Any]:
    """The gateway's event loop in a thread of its own (hypothesis drives boto3 here)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cm = _gateway(data)
    try:
        yield asyncio.run_coroutine_threadsafe(cm.__aenter__(), loop).result()
    finally:
        asyncio.run_coroutine_threadsafe(cm.__aexit__(None, None, None), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class LockModel(RuleBasedStateMachine):
    owner: Any = None
    anonymous: Any = None
    picks: list[int] | None = None  # where each picked version stands in the order made

    @initialize()
    def bucket(self) -> None:
        self.name = "lm-" + uuid.uuid4().hex[:16]
        self.owner.create_bucket(Bucket=self.name, ObjectLockEnabledForBucket=True,
                                 ACL="public-read-write")
        self.versions: dict[str, Locked] = {}
        self.deny_bypass = False

    # --- the model's rules ------------------------------------------------------------

    @staticmethod
    def _retained(v: Locked) -> bool:
        return v.mode is not None  # every date drawn is in the future

    def _bypass_ok(self, who: str, bypass: bool) -> bool:
        return bypass and who == "owner" and not self.deny_bypass

    def _deletable(self, v: Locked, who: str, bypass: bool) -> bool:
        if v.hold:
            return False
        if not self._retained(v):
            return True
        return v.mode == GOV and self._bypass_ok(who, bypass)

    def _client(self, who: str) -> Any:
        return self.owner if who == "owner" else self.anonymous

    def _pick(self, data: st.DataObject) -> str:
        """A version, drawn from the model's versions in the order they were made: the ids
        the gateway gives them (its clock and random bytes) sort differently from run to run,
        and a draw over them would replay as another version (FlakyStrategyDefinition)."""
        vid = data.draw(st.sampled_from(list(self.versions)), label="version")
        if self.picks is not None:
            self.picks.append(list(self.versions).index(vid))
        return vid

    # --- steps ------------------------------------------------------------------------

    @rule(body=st.binary(max_size=8), mode=st.sampled_from([None, GOV, COMP]),
          date=st.integers(0, len(DATES) - 1), hold=st.booleans(),
          who=st.sampled_from(["owner", "owner", "anonymous"]))
    def put(self, body: bytes, mode: str | None, date: int, hold: bool, who: str) -> None:
        kw: dict[str, Any] = {}
        if mode:
            kw.update(ObjectLockMode=mode, ObjectLockRetainUntilDate=DATES[date])
        if hold:
            kw["ObjectLockLegalHoldStatus"] = "ON"
        if who == "anonymous" and kw:  # the WRITE grant carries no lock permission
            assert error_code(self.anonymous.put_object, Bucket=self.name, Key=KEY, Body=body,
                         **kw) == "AccessDenied"
            return
        got = self._client(who).put_object(Bucket=self.name, Key=KEY, Body=body, **kw)
        self.versions[got["VersionId"]] = Locked(body, mode, DATES[date] if mode else None,
                                                 hold)

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), who=st.sampled_from(["owner", "anonymous"]), bypass=st.booleans(),
          batch=st.booleans())
    def delete_version(self, data: st.DataObject, who: str, bypass: bool, batch: bool) -> None:
        vid = self._pick(data)
        s3 = self._client(who)
        if batch:
            got = s3.delete_objects(Bucket=self.name, BypassGovernanceRetention=bypass,
                                    Delete={"Objects": [{"Key": KEY, "VersionId": vid}]})
            errors = [e["Code"] for e in got.get("Errors", [])]
            code = errors[0] if errors else None
        else:
            code = error_code(s3.delete_object, Bucket=self.name, Key=KEY, VersionId=vid,
                         BypassGovernanceRetention=bypass)
        if self._deletable(self.versions[vid], who, bypass):
            assert code is None
            del self.versions[vid]
        else:
            assert code == "AccessDenied"

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), mode=st.sampled_from([GOV, COMP]),
          date=st.integers(0, len(DATES) - 1), bypass=st.booleans())
    def retention(self, data: st.DataObject, mode: str, date: int, bypass: bool) -> None:
        vid = self._pick(data)
        v = self.versions[vid]
        until = DATES[date]
        code = error_code(self.owner.put_object_retention, Bucket=self.name, Key=KEY, VersionId=vid,
                     Retention={"Mode": mode, "RetainUntilDate": until},
                     BypassGovernanceRetention=bypass)
        keeps = (not self._retained(v) or (mode == v.mode and v.until is not None
                                           and until >= v.until))
        if keeps or (v.mode == GOV and self._bypass_ok("owner", bypass)):
            assert code is None
            v.mode, v.until = mode, until
        else:
            assert code == "AccessDenied"

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), on=st.booleans())
    def legal_hold(self, data: st.DataObject, on: bool) -> None:
        vid = self._pick(data)
        self.owner.put_object_legal_hold(Bucket=self.name, Key=KEY, VersionId=vid,
                                         LegalHold={"Status": "ON" if on else "OFF"})
        self.versions[vid].hold = on

    @rule(on=st.booleans())
    def deny_the_bypass(self, on: bool) -> None:
        if on:
            self.owner.put_bucket_policy(Bucket=self.name, Policy=json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Deny", "Principal": "*",
                    "Action": "s3:BypassGovernanceRetention",
                    "Resource": f"arn:aws:s3:::{self.name}/*"}]}))
        else:
            self.owner.delete_bucket_policy(Bucket=self.name)
        self.deny_bypass = on

    @rule(who=st.sampled_from(["owner", "anonymous"]))
    def delete_marker(self, who: str) -> None:
        assert error_code(self._client(who).delete_object, Bucket=self.name, Key=KEY) is None

    @precondition(lambda self: self.versions)
    @rule(data=st.data())
    def copy_older(self, data: st.DataObject) -> None:
        vid = self._pick(data)
        got = self.owner.copy_object(Bucket=self.name, Key=KEY, CopySource={
            "Bucket": self.name, "Key": KEY, "VersionId": vid}, MetadataDirective="REPLACE")
        self.versions[got["VersionId"]] = Locked(self.versions[vid].body)

    @rule()
    def suspend(self) -> None:
        assert error_code(self.owner.put_bucket_versioning, Bucket=self.name,
                     VersioningConfiguration={"Status": "Suspended"}) == "InvalidBucketState"

    # --- what must hold ---------------------------------------------------------------

    @invariant()
    def versions_and_locks_match(self) -> None:
        if not hasattr(self, "name"):
            return
        listed = self.owner.list_object_versions(Bucket=self.name).get("Versions", [])
        assert sorted(v["VersionId"] for v in listed) == sorted(self.versions)
        for vid, v in self.versions.items():
            got = self.owner.get_object(Bucket=self.name, Key=KEY, VersionId=vid)
            assert got["Body"].read() == v.body
            assert got.get("ObjectLockMode") == v.mode
            assert got.get("ObjectLockRetainUntilDate") == v.until
            assert got.get("ObjectLockLegalHoldStatus", "OFF") == ("ON" if v.hold else "OFF")


def _run(data: Path, examples: int = EXAMPLES) -> None:
    with _served(data) as s3:
        LockModel.owner = s3
        LockModel.anonymous = boto3.client(
            "s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
            config=no_retries(signature_version=UNSIGNED, s3={"addressing_style": "path"}))
        LockModel.TestCase.settings = settings(
            max_examples=examples, stateful_step_count=STEPS, deadline=None, database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        LockModel.TestCase().runTest()


def test_object_lock_matches_its_model(tmp_path: Path) -> None:
    _run(tmp_path)


def _scrambled_clock(seed: int) -> Any:
    """A stand-in for version ids' `time`: each reading steps forward by a random (seeded)
    amount up to 2**40 ns, so the ids' base64 text sorts in an order unrelated to the order
    they were made, and another one under another seed."""
    steps = random.Random(seed)
    now = [1_800_000_000 * 10**9]

    def time_ns() -> int:
        now[0] += steps.randrange(1, 1 << 40)
        return now[0]

    return types.SimpleNamespace(time_ns=time_ns)


def test_the_model_picks_the_same_versions_whatever_order_their_ids_sort_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two derandomized runs make the same draws, so under two version-id clocks they must
    pick the same versions (by when they were made). The real clock's ids sort out of that
    order now and then ('GO7fXXx...' was made before 'GO7fXX9...'), and a pick among the
    sorted ids then replayed as another version: hypothesis failed the run with
    FlakyStrategyDefinition, hiding whatever it had found."""
    traces = []
    for seed in (1, 2):
        with monkeypatch.context() as m:
            m.setattr(version_ids, "time", _scrambled_clock(seed))
            m.setattr(LockModel, "picks", [])
            (tmp_path / str(seed)).mkdir()
            _run(tmp_path / str(seed), examples=8)
            traces.append(LockModel.picks)
    assert traces[0] and traces[0] == traces[1]
