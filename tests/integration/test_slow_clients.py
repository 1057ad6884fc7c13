"""Stalled clients: a connection that never finishes its request headers is closed, for its
first request as for a later one on the same (keep-alive) connection; a body read before
anyone is known (a console login's, a POST upload's fields) is held to the same deadline
however it trickles; and a head over the configured `max_header_bytes` is refused."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.integration.cluster import LocalCluster


def _trickled(url: str, head: bytes, length: int) -> bytes:
    """The answer to `head` whose `length`-byte body is sent one byte per 0.5 s (a slow
    client's pace, not a synchronisation) for as long as the server reads: the answer as
    soon as one comes, else the one to the whole body."""
    with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port),
                                  timeout=30) as s:
        s.sendall(head + b"Host: %s\r\nContent-Length: %d\r\n\r\n"
                  % (urlsplit(url).netloc.encode(), length))
        s.settimeout(0.5)
        for _ in range(length):
            try:
                return s.recv(65536)
            except TimeoutError:
                s.sendall(b"{")
        s.settimeout(30)
        return s.recv(65536)


def test_stalled_headers_are_cut_and_server_keeps_serving(
        gateway_set_cluster: Callable[..., LocalCluster]) -> None:
    c = gateway_set_cluster("header_timeout_s = 2.0", "max_header_bytes = 8192")
    host, port = urlsplit(c.endpoint).hostname, urlsplit(c.endpoint).port
    stalled = []
    for _ in range(20):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(b"PUT /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Le")  # and nothing more
        stalled.append(s)
    started = time.monotonic()
    for s in stalled:
        assert s.recv(1024) == b""  # closed by the server, not by our timeout
        s.close()
    # well under the 20 s default, so the 2 s set at the first start is what cut them
    assert time.monotonic() - started < 15
    # a keep-alive connection whose second head stalls: cut by the same deadline, not
    # only by the 75 s keep-alive timeout (the recv below would time out at 30 s)
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # answered (403), kept alive
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 403") and b"Connection: close" not in first
        s.sendall(b"GET /bucket/key HTTP/1.1\r\nHost: x\r\nContent-Le")  # and no more
        started = time.monotonic()
        while s.recv(65536):
            pass  # the rest of the first answer, then the close
    assert time.monotonic() - started < 15
    s3 = c.client()
    s3.create_bucket(Bucket="after-stall")
    s3.put_object(Bucket="after-stall", Key="k", Body=b"still serving")
    assert s3.get_object(Bucket="after-stall", Key="k")["Body"].read() == b"still serving"
    # bodies read before any credential is checked: cut at the deadline (2 s), not served
    # whenever the last of 40 bytes comes (20 s here, days at a byte per idle limit)
    login = _trickled(c.env["TESSERA_ADMIN_URL"], b"POST /console/api/login HTTP/1.1\r\n"
                      b"Content-Type: application/json\r\n", 40)
    assert login.startswith(b"HTTP/1.1 408 ") and b'"RequestTimeout"' in login, login
    form = _trickled(c.endpoint, b"POST /after-stall HTTP/1.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=xx\r\n", 40)
    assert form.startswith(b"HTTP/1.1 400 ") and b"<Code>RequestTimeout</Code>" in form, form
    with socket.create_connection((host, port), timeout=30) as s:  # the setting is applied
        pad = b"x-pad: " + b"p" * 5000 + b"\r\n"
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + pad * 2 + b"\r\n")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"RequestHeaderSectionTooLarge" in answer
    assert b"<MaxSizeAllowed>8192</MaxSizeAllowed>" in answer
