"""review21e M1/L1: a PutObjectRetention/PutObjectLegalHold body is read before the request
is authorized only when the bucket policy names an s3:object-lock-* key (then its keys can
change the verdict); then it is small (8 KiB), a larger declared length is refused without
`100 Continue`, and it must come whole within the head's deadline. Otherwise the request is
authorized first: a stranger gets 403 without being asked for the body. (Anyone could pin
1 MiB per connection, held past every deadline by one byte per idle limit.)"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.integration.cluster import LocalCluster
from tests.integration.tenant_pair import new_bucket, policy, two_tenants

LOCK_DENY = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObjectRetention",
             "Condition": {"StringEquals": {"s3:object-lock-mode": "COMPLIANCE"}}}


def _address(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    return str(parts.hostname), int(parts.port or 80)


def _head_answer(endpoint: str, bucket: str, length: int, sub: str = "retention") -> bytes:
    """The first answer head to an anonymous PUT ?`sub` declaring `length` body bytes with
    `Expect: 100-continue`, none of them sent."""
    with socket.create_connection(_address(endpoint), timeout=30) as s:
        s.sendall(f"PUT /{bucket}/k?{sub} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                  "Expect: 100-continue\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            more = s.recv(65536)
            assert more, got
            got += more
    return got


def test_a_strangers_lock_body_is_not_asked_for(cluster: LocalCluster) -> None:
    w = two_tenants(cluster, "lbr")
    plain = new_bucket(w)  # no policy: authorized first, 403 before any body byte
    for sub in ("retention", "legal-hold"):
        answer = _head_answer(w["endpoint"], plain, 200, sub)
        assert answer.startswith(b"HTTP/1.1 403 "), answer
    keyed = new_bucket(w)  # a policy naming an object-lock key: the body is read first...
    w["a"].put_bucket_policy(Bucket=keyed, Policy=policy(
        {**LOCK_DENY, "Resource": f"arn:aws:s3:::{keyed}/*"}))
    answer = _head_answer(w["endpoint"], keyed, 5 * 1024**3)  # ...but never a large one
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert _head_answer(w["endpoint"], keyed, 8 * 1024 + 1).startswith(b"HTTP/1.1 400 ")


def test_a_stalled_lock_body_is_cut_at_the_head_deadline(
        gateway_set_cluster: Callable[..., LocalCluster]) -> None:
    """Half a body, then silence: answered RequestTimeout and closed at header_timeout_s
    (2 s here), not at the 20 s idle limit, which each trickled byte restarted, nor after
    a drain of its rest (DRAIN_S, 10 s)."""
    c = gateway_set_cluster("header_timeout_s = 2.0")
    s3 = c.client()
    s3.create_bucket(Bucket="stalled")
    s3.put_bucket_policy(Bucket="stalled", Policy=policy(
        {**LOCK_DENY, "Resource": "arn:aws:s3:::stalled/*"}))
    with socket.create_connection(_address(c.endpoint), timeout=10) as s:
        s.sendall(b"PUT /stalled/k?retention HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n"
                  b"\r\n" + b"<" * 100)  # and nothing more
        got = b""
        while more := s.recv(65536):  # answered and closed, or the timeout (10 s) fails
            got += more
    assert got.startswith(b"HTTP/1.1 400 ") and b"RequestTimeout" in got, got
    s3.put_object(Bucket="stalled", Key="k", Body=b"still serving")
