"""Request size limits answered before any body is read."""

from __future__ import annotations

import http.client
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


def test_object_over_5_tib_is_entity_too_large(cluster) -> None:  # type: ignore[no-untyped-def]
    s3 = cluster.client()
    s3.create_bucket(Bucket="limits")
    size = 5 * 1024**4 + 1
    headers = _signed_headers(cluster, "PUT", "/limits/huge", {"Content-Length": str(size)})
    conn = http.client.HTTPConnection(urlsplit(cluster.endpoint).netloc, timeout=30)
    try:
        conn.putrequest("PUT", "/limits/huge", skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()  # announce 5 TiB + 1 byte, send none of it
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 400 and b"<Code>EntityTooLarge</Code>" in body
    assert s3.list_objects_v2(Bucket="limits")["KeyCount"] == 0


def test_oversized_headers_are_refused(cluster) -> None:  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection(urlsplit(cluster.endpoint).netloc, timeout=30)
    try:
        conn.request("GET", "/", headers={"x-amz-meta-big": "a" * 40_000})
        r = conn.getresponse()
        r.read()
    finally:
        conn.close()
    assert r.status in (400, 431)
