"""A request head repeating Content-Length (what rclone < 1.59 sends on every single-part
upload): one same value is taken, even when the head arrives in pieces; differing values are
refused (request smuggling). The pieces here are separate segments (TCP_NODELAY, the first
Content-Length line a byte a segment), but how the server's reads cut them is up to its
scheduling: tests/unit/test_headguard_pieces.py feeds every cut to the handler itself."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from tests.integration.cluster import LocalCluster


def _exchange(cluster: LocalCluster, pieces: list[bytes]) -> bytes:
    """Send `pieces` one segment each (no Nagle coalescing) on a fresh connection; the whole
    answer."""
    u = urlsplit(cluster.endpoint)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    first = b"Content-Length: 5\r\n"  # cut before it, inside it, after it: every read
    rest = [b"connection: close\r\ncon", b"tent-length: 5\r\n\r\n", b"hello"]
    for _ in range(20):  # each a fresh chance for the server's reads to cut the head there
        answer = _exchange(cluster, [line, *(first[i:i + 1] for i in range(len(first))),
                                     *rest])
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert s3.get_object(Bucket="repeat-cl", Key="k")["Body"].read() == b"hello"

    differing = line + b"Content-Length: 5\r\ncontent-length: 6\r\nconnection: close\r\n\r\n"
    answer = _exchange(cluster, [differing, b"hello!"])
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer
    assert b"<Code>BadRequest</Code>" in answer
    assert s3.get_object(Bucket="repeat-cl", Key="k")["Body"].read() == b"hello"
