"""Outside-attacker checks on request limits: numbers too long for int(), continuation tokens
that are not a key. Each is a clear S3 error (never a 500) and the server keeps serving."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster
from tests.integration.test_attack_headers import signed_raw

NINES = "9" * 5000  # past CPython's 4,300-digit guard of int()


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    bucket = f"atk-lim-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    return {"s3": s3, "bucket": bucket, "cluster": cluster}


def _serving(w: dict[str, Any]) -> None:
    assert w["s3"].get_object(Bucket=w["bucket"], Key="k")["Body"].read() == b"0123456789"


def _code(answer: bytes) -> tuple[int, str | None]:
    status = int(answer.split(b" ", 2)[1])
    found = re.search(rb"<Code>([^<]*)</Code>", answer)
    return status, found.group(1).decode() if found else None


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


@pytest.mark.parametrize(("spec", "status", "body"), [
    (f"bytes=0-{NINES}", 206, b"0123456789"),  # an end past the object: to its end
    (f"bytes=-{NINES}", 206, b"0123456789"),  # a suffix longer than the object: all of it
    (f"bytes={'0' * 5000}2-3", 206, b"23"),  # leading zeros are only zeros
], ids=["end", "suffix", "zeros"])
def test_range_numbers_past_int_digit_limit_are_read_as_numbers(
        w: dict[str, Any], spec: str, status: int, body: bytes) -> None:
    r = w["s3"].get_object(Bucket=w["bucket"], Key="k", Range=spec)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == status and r["Body"].read() == body
    _serving(w)


def test_range_start_past_int_digit_limit_is_invalid_range(w: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        w["s3"].get_object(Bucket=w["bucket"], Key="k", Range=f"bytes={NINES}-")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert exc.value.response["Error"]["Code"] == "InvalidRange"
    _serving(w)


def test_delete_if_match_size_past_int_digit_limit_is_invalid_argument(
        w: dict[str, Any]) -> None:
    answer = signed_raw(w["cluster"], "DELETE", f"/{w['bucket']}/k", "",
                        {"x-amz-if-match-size": NINES.encode()})
    assert _code(answer) == (400, "InvalidArgument")
    _serving(w)
