"""aws-chunked uploads against the live gateway: signed chunks, trailers, forgeries.

boto3 only sends aws-chunked bodies over TLS, so these requests are built by hand: signed
with botocore's SigV4 signer, chunk and trailer signatures as AWS documents them.
"""

from __future__ import annotations

import base64
import http.client
import random
import zlib
from datetime import UTC, datetime
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from gateway.s3.sigv4 import authenticate
from tests.unit.test_sigv4_chunked import encode_chunked

BUCKET = "streaming-up"


class _StreamingAuth(botocore.auth.S3SigV4Auth):
    """botocore's signer, told which streaming payload mode the body uses."""

    def __init__(self, mode: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._mode = mode

    def payload(self, request):  # type: ignore[no-untyped-def]
        return self._mode


def _put(cluster, key: str, mode: str, chunks: list[bytes], *, trailer: str | None = None,
         trailer_value: str | None = None, sign_trailer: bool = False,
         mutate=None) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    return _put_to(cluster, BUCKET, key, mode, chunks, trailer=trailer,
                   trailer_value=trailer_value, sign_trailer=sign_trailer, mutate=mutate)


def _put_to(cluster, bucket: str, key: str, mode: str, chunks: list[bytes], *,  # type: ignore[no-untyped-def]
            trailer: str | None = None, trailer_value: str | None = None,
            sign_trailer: bool = False, mutate=None) -> tuple[int, bytes]:
    """One aws-chunked PUT of `chunks` to bucket/key, signed in `mode` (see `_put`)."""
    env = cluster.env
    url = f"{cluster.endpoint}/{bucket}/{key}"
    total = sum(len(c) for c in chunks)
    headers = {"X-Amz-Content-SHA256": mode, "Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(total)}
    if trailer:
        headers["x-amz-trailer"] = trailer
    req = AWSRequest(method="PUT", url=url, headers=headers)
    creds = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    _StreamingAuth(mode, creds, "s3", env["AWS_DEFAULT_REGION"]).add_auth(req)
    sent = dict(req.headers.items())
    host = urlsplit(cluster.endpoint).netloc
    sent.setdefault("Host", host)
    now = datetime.strptime(sent["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    auth = authenticate("PUT", f"/{bucket}/{key}", [], sent,
                        lambda _: env["AWS_SECRET_ACCESS_KEY"], now)
    signed = mode.startswith("STREAMING-AWS4")
    trailers = [(trailer, trailer_value or "")] if trailer else None
    body = encode_chunked(chunks, auth if signed else None, trailers, sign_trailer)
    if mutate is not None:
        body = mutate(body)
    sent["Content-Length"] = str(len(body))
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request("PUT", f"/{bucket}/{key}", body=body, headers=sent)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _absent(s3, key: str) -> bool:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=BUCKET, Key=key)
    return e.value.response["Error"]["Code"] in ("404", "NoSuchKey")


def test_aws_chunked_uploads(cluster) -> None:  # type: ignore[no-untyped-def]
    s3 = cluster.client()
    s3.create_bucket(Bucket=BUCKET)
    rng = random.Random(3)
    chunks = [rng.randbytes(64 * 1024), rng.randbytes(1500 * 1024), rng.randbytes(17)]
    data = b"".join(chunks)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

    status, body = _put(cluster, "signed", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", chunks)
    assert status == 200, body
    assert s3.get_object(Bucket=BUCKET, Key="signed")["Body"].read() == data

    status, body = _put(cluster, "signed-trailer", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                        chunks, trailer="x-amz-checksum-crc32", trailer_value=crc,
                        sign_trailer=True)
    assert status == 200, body
    head = s3.head_object(Bucket=BUCKET, Key="signed-trailer", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc

    status, body = _put(cluster, "unsigned-trailer", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                        chunks, trailer="x-amz-checksum-crc32", trailer_value=crc)
    assert status == 200, body
    assert s3.get_object(Bucket=BUCKET, Key="unsigned-trailer")["Body"].read() == data

    # A wrong trailer checksum: BadDigest, nothing stored.
    bad = base64.b64encode(b"\0\0\0\0").decode()
    status, body = _put(cluster, "bad-crc", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", chunks,
                        trailer="x-amz-checksum-crc32", trailer_value=bad)
    assert status == 400 and b"<Code>BadDigest</Code>" in body
    assert _absent(s3, "bad-crc")

    # A chunk altered after signing: SignatureDoesNotMatch, nothing stored.
    def flip(b: bytes) -> bytes:
        i = b.index(b"\r\n") + 100
        return b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]

    status, body = _put(cluster, "forged", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", chunks,
                        mutate=flip)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    assert _absent(s3, "forged")

    # A chunk under 8 KiB that is not the last, signed or unsigned-trailer: 403
    # InvalidChunkSizeError (AWS), nothing stored.
    small = [chunks[0], b"s" * 100, chunks[2]]
    status, body = _put(cluster, "small-chunk", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", small)
    assert status == 403 and b"<Code>InvalidChunkSizeError</Code>" in body, body
    assert b"<Chunk>3</Chunk>" in body and b"<BadChunkSize>100</BadChunkSize>" in body, body
    assert _absent(s3, "small-chunk")
    tiny = [data[i : i + 1] for i in range(3000)]
    tiny_crc = base64.b64encode(zlib.crc32(data[:3000]).to_bytes(4, "big")).decode()
    status, body = _put(cluster, "tiny", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", tiny,
                        trailer="x-amz-checksum-crc32", trailer_value=tiny_crc)
    assert status == 403 and b"<Code>InvalidChunkSizeError</Code>" in body, body
    assert b"<Chunk>2</Chunk>" in body and b"<BadChunkSize>1</BadChunkSize>" in body, body
    assert _absent(s3, "tiny")

    # A body cut before its final chunk: IncompleteBody, nothing stored.
    status, body = _put(cluster, "truncated", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", chunks,
                        mutate=lambda b: b[: len(b) // 2])
    assert status == 400 and b"<Code>IncompleteBody</Code>" in body
    assert _absent(s3, "truncated")
    # The server kept serving throughout.
    assert s3.get_object(Bucket=BUCKET, Key="signed")["Body"].read() == data


def test_forged_final_chunk_or_trailer_signature_stores_nothing(cluster) -> None:  # type: ignore[no-untyped-def]
    """Every chunk verified but the last: a forged final (empty) chunk signature, a trailer
    signature that is wrong or missing, or a trailer value changed after signing each end
    the upload with 403 SignatureDoesNotMatch, and no object is stored."""
    s3 = cluster.client()
    s3.create_bucket(Bucket=BUCKET + "-seal")
    rng = random.Random(5)
    chunks = [rng.randbytes(64 * 1024), rng.randbytes(100)]
    data = b"".join(chunks)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"

    def last_signature(marker: bytes, forged: bytes) -> object:
        def swap(b: bytes) -> bytes:
            i = b.rindex(marker) + len(marker)
            return b[:i] + forged + b[i + 64:]
        return swap

    def changed_crc(b: bytes) -> bytes:
        return b.replace(crc.encode(), base64.b64encode(b"\1\2\3\4"))

    cases = {
        "final-chunk": dict(sign_trailer=True,
                            mutate=last_signature(b"0;chunk-signature=", b"0" * 64)),
        "trailer-wrong": dict(sign_trailer=True,
                              mutate=last_signature(b"x-amz-trailer-signature:", b"1" * 64)),
        "trailer-missing": dict(sign_trailer=False),
        "trailer-changed": dict(sign_trailer=True, mutate=changed_crc),
    }
    for key, kw in cases.items():
        status, body = _put_to(cluster, BUCKET + "-seal", key, mode, chunks,
                               trailer="x-amz-checksum-crc32", trailer_value=crc, **kw)
        assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body, (key, body)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET + "-seal")
    status, body = _put_to(cluster, BUCKET + "-seal", "sealed", mode, chunks,
                           trailer="x-amz-checksum-crc32", trailer_value=crc, sign_trailer=True)
    assert status == 200, body
