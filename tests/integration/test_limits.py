"""Request size limits: one upload's cap (AWS: 5 GiB for a PUT or a POST), refused before any
body is read when the request announces its size; oversized headers."""

from __future__ import annotations

import http.client
import subprocess
from urllib.parse import urlsplit

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class _Unsigned(botocore.auth.S3SigV4Auth):
    def payload(self, request):  # type: ignore[no-untyped-def]
        return "UNSIGNED-PAYLOAD"


def _signed_headers(cluster, method: str, path: str, headers: dict[str, str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = cluster.env
    req = AWSRequest(method=method, url=cluster.endpoint + path, headers=headers)
    creds = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    _Unsigned(creds, "s3", env["AWS_DEFAULT_REGION"]).add_auth(req)
    return dict(req.headers.items())


def test_put_over_5_gib_is_entity_too_large(cluster) -> None:  # type: ignore[no-untyped-def]
    """AWS takes at most 5 GiB in one PUT (bigger objects go by multipart upload); the
    refusal names that cap and comes before any of the body is read."""
    s3 = cluster.client()
    s3.create_bucket(Bucket="limits")
    size = 5 * 1024**3 + 1
    headers = _signed_headers(cluster, "PUT", "/limits/huge", {"Content-Length": str(size)})
    conn = http.client.HTTPConnection(urlsplit(cluster.endpoint).netloc, timeout=30)
    try:
        conn.putrequest("PUT", "/limits/huge", skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()  # announce 5 GiB + 1 byte, send none of it
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 400 and b"<Code>EntityTooLarge</Code>" in body, body
    assert b"<MaxSizeAllowed>5368709120</MaxSizeAllowed>" in body, body
    assert s3.list_objects_v2(Bucket="limits")["KeyCount"] == 0


def _curl(*args: str) -> tuple[str, bytes]:
    """curl's HTTP status and body for one request."""
    out = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args],
                         capture_output=True, timeout=120, check=True)
    body, _, status = out.stdout.rpartition(b"\n")
    return status.decode(), body


def test_put_and_post_obey_the_single_upload_cap(gateway_set_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`max_object_size` caps a PutObject and a browser POST alike (AWS: 5 GB each), and a
    POST policy's wider content-length-range does not lift it. curl is the client: a
    presigned PUT URL and a presigned POST form from boto3."""
    cap = 1024 * 1024
    c = gateway_set_cluster(f"max_object_size = {cap}")
    s3 = c.client()
    s3.create_bucket(Bucket="caps")
    at, over = tmp_path / "at", tmp_path / "over"
    at.write_bytes(b"a" * cap)
    over.write_bytes(b"o" * (cap + 1))

    def put(key: str, f) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "caps", "Key": key})
        return _curl("-T", str(f), url)

    assert put("at", at)[0] == "200"
    status, body = put("over", over)
    assert status == "400" and b"<Code>EntityTooLarge</Code>" in body, body
    assert f"<MaxSizeAllowed>{cap}</MaxSizeAllowed>".encode() in body, body

    for conditions in (None, [["content-length-range", 0, 10 * cap]]):
        form = s3.generate_presigned_post("caps", "posted", Conditions=conditions)
        fields = [a for k, v in form["fields"].items() for a in ("-F", f"{k}={v}")]
        status, body = _curl(*fields, "-F", f"file=@{over}", form["url"])
        assert status == "400" and b"<Code>EntityTooLarge</Code>" in body, (conditions, body)
        assert f"<MaxSizeAllowed>{cap}</MaxSizeAllowed>".encode() in body, body
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="caps").get("Contents", [])]
    assert keys == ["at"]


def test_oversized_headers_are_refused(cluster) -> None:  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection(urlsplit(cluster.endpoint).netloc, timeout=30)
    try:
        conn.request("GET", "/", headers={"x-amz-meta-big": "a" * 40_000})
        r = conn.getresponse()
        r.read()
    finally:
        conn.close()
    assert r.status in (400, 431)
