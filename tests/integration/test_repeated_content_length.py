"""A request head repeating Content-Length (what rclone < 1.59 sends on every single-part
upload): one same value is taken, even when the head arrives in pieces; differing values are
refused (request smuggling)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from tests.integration.cluster import LocalCluster


def _exchange(cluster: LocalCluster, pieces: list[bytes]) -> bytes:
    """Send `pieces` one write each on a fresh connection; the whole answer."""
    u = urlsplit(cluster.endpoint)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        for p in pieces:
            s.sendall(p)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_repeated_content_length(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    s3.create_bucket(Bucket="repeat-cl")
    url = urlsplit(s3.generate_presigned_url("put_object", Params={"Bucket": "repeat-cl",
                                                                   "Key": "k"}))
    target = f"{url.path}?{url.query}".encode()
    line = b"PUT " + target + b" HTTP/1.1\r\nHost: " + url.netloc.encode() + b"\r\n"
    same = line + b"Content-Length: 5\r\nconnection: close\r\ncon"
    answer = _exchange(cluster, [same, b"tent-length: 5\r\n\r\n", b"hello"])
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert s3.get_object(Bucket="repeat-cl", Key="k")["Body"].read() == b"hello"

    differing = line + b"Content-Length: 5\r\ncontent-length: 6\r\nconnection: close\r\n\r\n"
    answer = _exchange(cluster, [differing, b"hello!"])
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer
    assert b"<Code>BadRequest</Code>" in answer
    assert s3.get_object(Bucket="repeat-cl", Key="k")["Body"].read() == b"hello"
