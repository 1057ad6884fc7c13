"""review17h: a fixed s3:x-amz-server-side-encryption-aws-kms-key-id does not make a bucket
policy non-public here. AWS counts it because a caller must also be allowed to use that KMS
key; this gateway seals a write with the bucket tenant's key for any caller the policy lets
in, so the "pin" is a header value anyone can send (the key's ARN is no secret)."""

from __future__ import annotations

from typing import Any

from tests.integration.cluster import LocalCluster
from tests.integration.tenant_pair import new_bucket, policy, refusal
from tests.integration.test_kms import create_key
from tests.integration.test_policy_key_context import w  # noqa: F401


def test_restrict_public_buckets_still_blocks_a_kms_key_id_pinned_public_write(
        cluster: LocalCluster, w: dict[str, Any]) -> None:  # noqa: F811
    a = w["a"]
    bucket = new_bucket(w)
    arn = create_key(cluster, w["name_a"], "alias/pin-" + w["tag"])["arn"]
    a.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": False, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
        "RestrictPublicBuckets": True})
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringEquals": {
            "s3:x-amz-server-side-encryption-aws-kms-key-id": arn}}}))
    assert refusal(lambda: w["anon"].put_object(
        Bucket=bucket, Key="from-anyone", Body=b"x", ServerSideEncryption="aws:kms",
        SSEKMSKeyId=arn)) == (403, "AccessDenied")
