"""Every request header and query parameter AWS documents (botocore's S3 model) for an
operation the gateway implements is either named somewhere in the gateway's S3 code or
listed below as one AWS itself ignores in the situations this gateway can be in. A name AWS
adds to its model (x-amz-checksum-sha512 and four more algorithms, x-amz-bucket-namespace,
x-amz-if-match-initiated-time were) fails here until someone decides what the gateway does
with it, instead of being accepted and ignored.

What it does not check: that the named operation reads the name. The text of all of
gateway/s3 counts (comments and response code too), so a name one operation reads and
another ignores passes (x-amz-checksum-type, read by CreateMultipartUpload, passed while
CompleteMultipartUpload ignored it). Whether each operation applies or refuses a name is
for the integration tests (tests/integration/test_attack_api.py and the S3 modules)."""

from __future__ import annotations

from pathlib import Path

import botocore.session
import pytest

from gateway.s3 import checksums, sse
from gateway.s3.handlers import load_all

ROOT = Path(__file__).resolve().parents[2]
_MODEL = botocore.session.get_session().get_service_model("s3")

# Names AWS ignores here, with why; each must still be in the model (a stale entry fails).
IGNORED_AS_AWS = {
    "x-amz-request-payer": "no bucket here is Requester Pays (PutBucketRequestPayment is "
                           "501): AWS ignores the header on such buckets",
    "x-amz-mfa": "MFA Delete cannot be enabled (PutBucketVersioning refuses it, 501): AWS "
                 "asks for the header only of a bucket with MFA Delete",
    "x-amz-bucket-object-lock-token": "only for enabling Object Lock on a bucket with "
                                      "replication, which is not offered (501)",
    "x-amz-confirm-remove-self-bucket-access": "the bucket's owner is never bound by its "
                                               "bucket policy here, so no policy can lock "
                                               "it out",
}


def _documented() -> list[tuple[str, str]]:
    """(operation, header or query name) for every implemented operation."""
    out = []
    for op in sorted(set(load_all()) & set(_MODEL.operation_names)):
        for member in _MODEL.operation_model(op).input_shape.members.values():
            if member.serialization.get("location") in ("header", "headers", "querystring"):
                out.append((op, member.serialization["name"]))
    return out


def _gateway_names() -> set[str]:
    """Names the gateway's S3 code spells out, and those it builds from a registry."""
    text = "\n".join(p.read_text() for p in (ROOT / "gateway" / "s3").rglob("*.py")).lower()
    built = {*checksums.HEADER.values(), *checksums.UNCHECKED_HEADERS,
             *(h.replace("x-amz-", sse.COPY_PREFIX, 1).lower()
               for h in (sse.H_C_ALG, sse.H_C_KEY, sse.H_C_MD5))}
    return {n for n in {name.lower() for _, name in _documented()} if n in text} | built


GATEWAY_NAMES = _gateway_names()


@pytest.mark.parametrize(("op", "name"), _documented())
def test_documented_input_is_read_or_ignored_as_aws_does(op: str, name: str) -> None:
    assert name.lower() in GATEWAY_NAMES or name.lower() in IGNORED_AS_AWS, (
        f"{op} documents {name}: apply it, refuse it with AWS's error, or list it in "
        "IGNORED_AS_AWS with the reason AWS ignores it here")


def test_ignored_names_are_still_documented() -> None:
    assert set(IGNORED_AS_AWS) <= {name.lower() for _, name in _documented()}
