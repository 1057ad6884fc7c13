"""s3low22: with `Expect: 100-continue`, PutObject and UploadPart are refused from their
heads before `100 Continue` when the head already says so (a declared size over the limit,
an upload id that does not exist), so the client never sends a body that will be refused
(AWS's 100-continue: a request rejected "based on the headers" gets its final answer before
the body). Before, the gateway answered 100 Continue once the request was authorized and
only then refused, after the client had started sending the body."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.cluster import LocalCluster


def _first_head(cluster: LocalCluster, path: str, length: int) -> bytes:
    """The first answer head to a signed PUT `path` declaring `length` body bytes with
    `Expect: 100-continue`, none of them sent."""
    env = cluster.env
    url = cluster.endpoint + path
    req = AWSRequest("PUT", url, headers={"Content-Length": str(length),
                                           "Expect": "100-continue",
                                           "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "s3",
                "us-east-1").add_auth(req)
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"PUT {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in req.headers.items()) + "\r\n"
    with socket.create_connection((str(parts.hostname), int(parts.port or 80)),
                                  timeout=30) as s:
        s.sendall(head.encode())
        got = b""
        while b"\r\n\r\n" not in got:
            more = s.recv(65536)
            assert more, got
            got += more
    return got


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    s3.create_bucket(Bucket="expect-continue")
    up = s3.create_multipart_upload(Bucket="expect-continue", Key="mp")["UploadId"]
    return {"s3": s3, "up": up}


def test_a_part_of_an_unknown_upload_is_refused_before_100_continue(
        cluster: LocalCluster, w: dict[str, Any]) -> None:
    answer = _first_head(cluster, "/expect-continue/mp?partNumber=1&uploadId=nosuchupload",
                         1024)
    assert answer.startswith(b"HTTP/1.1 404 "), answer


def test_an_oversized_part_or_object_is_refused_before_100_continue(
        cluster: LocalCluster, w: dict[str, Any]) -> None:
    big = 6 * 1024**3  # over both limits (5 GiB)
    answer = _first_head(cluster, f"/expect-continue/mp?partNumber=1&uploadId={w['up']}", big)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert _first_head(cluster, "/expect-continue/k", big).startswith(b"HTTP/1.1 400 ")


def test_a_good_part_and_object_get_100_continue(
        cluster: LocalCluster, w: dict[str, Any]) -> None:
    """The control: a request its head does not refuse is asked for its body."""
    answer = _first_head(cluster, f"/expect-continue/mp?partNumber=1&uploadId={w['up']}", 16)
    assert answer.startswith(b"HTTP/1.1 100 "), answer
    assert _first_head(cluster, "/expect-continue/k", 16).startswith(b"HTTP/1.1 100 ")
