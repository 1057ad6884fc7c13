"""Outside-attacker checks on numbers a request gives in headers and the query string (a
Range, x-amz-copy-source-range, a SigV2 presigned Expires): only ASCII digits are numbers.
Python's int() also takes other Unicode digits, '_', '+' and spaces: a superscript digit
was a 500, and 'bytes=1_0-2_0' or Arabic-Indic digits were served as a range S3 ignores."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.integration.cluster import LocalCluster
from tests.integration.test_attack_headers import signed_raw

BODY = bytes(range(100))


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    bucket = f"atk-num-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=BODY)
    return {"s3": s3, "bucket": bucket, "cluster": cluster}


@pytest.mark.parametrize("rng", ["bytes=1_0-2_0", "bytes=\u0661-\u0662", "bytes=+1-2",
                                 "bytes=\u00b2-", "bytes=-\u00b2", "bytes=-+5"])
def test_range_that_is_not_ascii_digits_is_ignored(w: dict[str, Any], rng: str) -> None:
    """S3 ignores a Range it cannot parse: the whole object, 200."""
    answer = signed_raw(w["cluster"], "GET", f"/{w['bucket']}/k", "",
                        {"range": rng.encode()})
    assert answer.startswith(b"HTTP/1.1 200 "), (rng, answer[:300])
    assert answer.endswith(b"\r\n\r\n" + BODY), (rng, answer[:300])


@pytest.mark.parametrize("rng", ["bytes=\u00b2-\u00b3", "bytes=\u0661-\u0662",
                                 "bytes=1_0-2_0", "bytes=+1-2"])
def test_copy_source_range_that_is_not_ascii_digits_is_invalid_argument(
        w: dict[str, Any], rng: str) -> None:
    s3, bucket = w["s3"], w["bucket"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    answer = signed_raw(w["cluster"], "PUT", f"/{bucket}/m", f"partNumber=1&uploadId={up}",
                        {"x-amz-copy-source": f"/{bucket}/k".encode(),
                         "x-amz-copy-source-range": rng.encode()})
    assert answer.startswith(b"HTTP/1.1 400 "), (rng, answer[:400])
    assert b"<Code>InvalidArgument</Code>" in answer, (rng, answer[:400])
    assert s3.list_parts(Bucket=bucket, Key="m", UploadId=up).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=up)


@pytest.mark.parametrize("expires", ["%C2%B2", "%D9%A1%D9%A2", "1_0", "%2B1"])
def test_sigv2_expires_that_is_not_ascii_digits_is_access_denied(
        w: dict[str, Any], expires: str) -> None:
    key = w["cluster"].env["AWS_ACCESS_KEY_ID"]
    r = requests.get(f"{w['cluster'].endpoint}/{w['bucket']}/k?AWSAccessKeyId={key}"
                     f"&Signature=abc&Expires={expires}", timeout=60)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text, (expires, r.text)
    assert "Query-string authentication requires" in r.text, r.text


@pytest.mark.parametrize("query", ["list-type=2&max-keys=1_0", "list-type=2&max-keys=%2B1",
                                   "list-type=2&max-keys=%D9%A1", "max-uploads=1_0&uploads=",
                                   "max-buckets=1_0"])
def test_query_integer_that_is_not_ascii_digits_is_invalid_argument(
        w: dict[str, Any], query: str) -> None:
    path = "/" if query.startswith("max-buckets") else f"/{w['bucket']}"
    answer = signed_raw(w["cluster"], "GET", path, query, {})
    assert answer.startswith(b"HTTP/1.1 400 "), (query, answer[:400])
    assert b"<Code>InvalidArgument</Code>" in answer, (query, answer[:400])


@pytest.mark.parametrize("number", ["%2B1", "%D9%A1", "1_0"])
def test_get_part_number_that_is_not_ascii_digits_is_invalid_argument(
        w: dict[str, Any], number: str) -> None:
    answer = signed_raw(w["cluster"], "GET", f"/{w['bucket']}/k", f"partNumber={number}", {})
    assert answer.startswith(b"HTTP/1.1 400 "), (number, answer[:400])
    assert b"<Code>InvalidArgument</Code>" in answer, (number, answer[:400])
