"""Outside-attacker checks on request limits: continuation tokens that are not a key. Each
is a clear S3 error (never a 500) and the server keeps serving."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    bucket = f"atk-lim-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    return {"s3": s3, "bucket": bucket, "cluster": cluster}


def _serving(w: dict[str, Any]) -> None:
    assert w["s3"].get_object(Bucket=w["bucket"], Key="k")["Body"].read() == b"0123456789"


def test_continuation_token_that_is_not_a_utf8_key_is_invalid_argument(
        w: dict[str, Any]) -> None:
    """'aaaa' is base64 of b'i\\xa6\\x9a', no key's UTF-8: was a 500 (a key with lone
    surrogates reached the metadata key packer)."""
    for call in (lambda: w["s3"].list_objects_v2(Bucket=w["bucket"], ContinuationToken="aaaa"),
                 lambda: w["s3"].list_buckets(ContinuationToken="aaaa")):
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert exc.value.response["Error"]["Code"] == "InvalidArgument"
    _serving(w)
