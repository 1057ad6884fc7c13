"""How the gateway refuses a delete of a locked version (in-process S3 pipeline, boto3):

- with AWS's words: AccessDenied "Access Denied because object protected by object lock."
  (moto's tests/test_s3/test_s3_lock.py, marked aws_verified, asserts that message for a
  DeleteObjects entry; the aws CLI prints the same for DeleteObject), while a refusal for
  want of permission, and the lock refusals no AWS output shows words for (a shortened
  retention, a write over a locked null version), stay the plain "Access Denied";
- DeleteObjects with `x-amz-bypass-governance-retention` reads and parses the bucket policy
  once per request, not once per key."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.s3 import policy
from tests.unit.test_object_lock_attacks import Gateway, _locked, gw  # noqa: F401

LOCKED = "Access Denied because object protected by object lock."


def _message(call: Any, **kw: Any) -> tuple[str, str]:
    try:
        call(**kw)
    except ClientError as e:
        return str(e.response["Error"]["Code"]), str(e.response["Error"]["Message"])
    return "", ""


async def test_a_locked_version_is_refused_with_aws_words(gw: Gateway) -> None:  # noqa: F811
    vid = await _locked(gw.owner, "words")
    assert await asyncio.to_thread(_message, gw.owner.delete_object, Bucket="words", Key="k",
                                   VersionId=vid) == ("AccessDenied", LOCKED)
    got = await asyncio.to_thread(gw.owner.delete_objects, Bucket="words", Delete={
        "Objects": [{"Key": "k", "VersionId": vid}]})
    assert [(e["Code"], e["Message"]) for e in got["Errors"]] == [("AccessDenied", LOCKED)]
    # no lock involved: the plain refusal
    assert await asyncio.to_thread(_message, gw.other.get_object, Bucket="words",
                                   Key="k") == ("AccessDenied", "Access Denied")


async def test_other_lock_refusals_keep_the_plain_words(gw: Gateway) -> None:  # noqa: F811
    """AWS's lock message is known only for deletes: a retention shortened without the
    bypass, and (a state AWS cannot reach) a write over a locked null version, keep the
    plain "Access Denied" rather than words no AWS output shows for them."""
    vid = await _locked(gw.owner, "plain")
    assert await asyncio.to_thread(
        _message, gw.owner.put_object_retention, Bucket="plain", Key="k", VersionId=vid,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime(2030, 1, 1, tzinfo=UTC)},
    ) == ("AccessDenied", "Access Denied")
    await asyncio.to_thread(gw.owner.create_bucket, Bucket="nullv")
    await gw.cluster.buckets.update("t", "nullv", versioning="Suspended", object_lock={
        "enabled": True, "rule": {"mode": "COMPLIANCE", "days": 1}})
    await asyncio.to_thread(gw.owner.put_object, Bucket="nullv", Key="k", Body=b"first")
    assert await asyncio.to_thread(_message, gw.owner.put_object, Bucket="nullv", Key="k",
                                   Body=b"second") == ("AccessDenied", "Access Denied")


async def test_a_bypass_batch_parses_the_policy_once(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    await asyncio.to_thread(gw.owner.create_bucket, Bucket="batch",
                            ObjectLockEnabledForBucket=True)
    await asyncio.to_thread(gw.owner.put_bucket_policy, Bucket="batch", Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::u:root"},
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::batch/*"}]}))
    real, parsed = policy.statements, []

    def counting(text: str | None) -> list[dict[str, Any]]:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(policy, "statements", counting)

    async def delete(keys: int) -> int:
        parsed.clear()
        got = await asyncio.to_thread(
            gw.owner.delete_objects, Bucket="batch", BypassGovernanceRetention=True,
            Delete={"Objects": [{"Key": f"k{i}"} for i in range(keys)]})
        assert len(got["Deleted"]) == keys
        return len(parsed)

    assert await delete(20) == await delete(1)
