"""Shared by the SigV4 tests: the AWS documentation example credentials, a test key, a
secret lookup, an error assertion and a
chunked-body reader."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.sigv4_fields import SigV4Error

# --------------------------------------------------------------------------- fixtures

EX_AK = "AKIAIOSFODNN7EXAMPLE"
EX_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EX_NOW = datetime(2013, 5, 24, 0, 0, 0, tzinfo=UTC)
EX_CRED = f"{EX_AK}/20130524/us-east-1/s3/aws4_request"
EMPTY = hashlib.sha256(b"").hexdigest()

AK = "TESSERAKEY0000000001"
SECRET = "tessera/secret+key=0123456789abcdefghij"
ENDPOINT = "http://127.0.0.1:9000"


def lookup(ak: str) -> str | None:
    """Secret store for the tests."""
    return {EX_AK: EX_SECRET, AK: SECRET}.get(ak)


def expect_error(code: str, fn: Callable[[], Any]) -> SigV4Error:
    """Run ``fn`` and assert it raises SigV4Error with ``code``."""
    with pytest.raises(SigV4Error) as info:
        fn()
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value


def example_auth(signed_headers: str, signature: str) -> str:
    """Authorization header for the AWS documentation examples."""
    return (
        f"AWS4-HMAC-SHA256 Credential={EX_CRED},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )


def decode_all(decoder: ChunkedDecoder, pieces: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """Feed ``pieces`` and return (payload, trailers)."""
    out = bytearray()
    for piece in pieces:
        for part in decoder.feed(piece):
            out += part
    return bytes(out), decoder.finish()
