"""review21g: an object tenant u writes into tenant t's bucket under a grant, with the
bucket's default encryption SSE-KMS: u owns it (ObjectWriter), and on AWS it is sealed with
u's own aws/s3 key, so u reads it back. Here it is sealed with t's key and
`sse.refuse_foreign_kms` refuses u; t, the bucket owner, has no ACL grant on it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tests.unit.test_tenant_forgery import _world


def _code(fn: Any) -> str:
    try:
        fn()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


async def test_the_writer_reads_back_what_it_wrote_into_a_kms_default_bucket(
        tmp_path: Path) -> None:
    async with _world(tmp_path) as w:
        def run() -> dict[str, str]:
            t, u = w["t"], w["u"]
            t.put_bucket_encryption(Bucket="vict", ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {
                    "SSEAlgorithm": "aws:kms"}}]})
            t.put_bucket_policy(Bucket="vict", Policy=json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"AWS": "u"},
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": "arn:aws:s3:::vict/*"}]}))
            put = u.put_object(Bucket="vict", Key="from-u", Body=b"u's bytes")
            return {"sse": put.get("ServerSideEncryption", ""),
                    "u reads": _code(lambda: u.get_object(Bucket="vict",
                                                          Key="from-u")["Body"].read()),
                    "t reads": _code(lambda: t.get_object(Bucket="vict",
                                                          Key="from-u")["Body"].read())}
        got = await asyncio.to_thread(run)
        assert got["u reads"] == "ok", got
