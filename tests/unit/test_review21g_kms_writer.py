"""review21g: an object tenant u writes into tenant t's bucket under a grant, with the
bucket's default encryption SSE-KMS: u owns it (ObjectWriter), and on AWS it is sealed with
u's own aws/s3 key, so u reads it back. (review21g found it sealed with t's key and
refused to u; tenant22 seals it with u's key, as AWS.)"""

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


async def test_a_writer_under_a_grant_seals_with_its_own_kms_key(tmp_path: Path) -> None:
    """tenant22, as AWS: the default key (aws/s3), an alias or a key id is resolved in the
    requester's account, a bucket default's included, so u's SSE-KMS object in t's bucket
    is sealed with u's own key (its ARN names u); t, the bucket owner, cannot decrypt it
    even with an ACL grant (no kms:Decrypt on u's key); a bucket default naming t's key by
    ARN is a key u may not use: AccessDenied."""
    async with _world(tmp_path) as w:
        def run() -> dict[str, str]:
            t, u = w["t"], w["u"]
            t.put_bucket_encryption(Bucket="vict", ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {
                    "SSEAlgorithm": "aws:kms"}}]})
            t.put_bucket_policy(Bucket="vict", Policy=json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"AWS": "u"},
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectAcl"],
                    "Resource": "arn:aws:s3:::vict/*"}]}))
            put = u.put_object(Bucket="vict", Key="from-u", Body=b"u's bytes",
                               ACL="bucket-owner-full-control")
            named = u.put_object(Bucket="vict", Key="named", Body=b"x",
                                 ServerSideEncryption="aws:kms")  # header, no key: aws/s3
            up = u.create_multipart_upload(Bucket="vict", Key="mpu")  # a default's too
            etag = u.upload_part(Bucket="vict", Key="mpu", UploadId=up["UploadId"],
                                 PartNumber=1, Body=b"part of u")["ETag"]
            u.complete_multipart_upload(Bucket="vict", Key="mpu", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                    "ETag": etag}]})
            mpu = u.get_object(Bucket="vict", Key="mpu")
            out = {"arn account": put["SSEKMSKeyId"].split(":")[4],
                   "mpu account": up["SSEKMSKeyId"].split(":")[4],
                   "mpu reads": mpu["Body"].read().decode(),
                   "named account": named["SSEKMSKeyId"].split(":")[4],
                   "u reads": _code(lambda: u.get_object(Bucket="vict",
                                                         Key="from-u")["Body"].read()),
                   "t reads": _code(lambda: t.get_object(Bucket="vict",
                                                         Key="from-u")["Body"].read()),
                   "t heads": _code(lambda: t.head_object(Bucket="vict", Key="from-u"))}
            t.put_bucket_encryption(Bucket="vict", ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {
                    "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": w["arn"]}}]})
            out["u puts under t's key"] = _code(lambda: u.put_object(
                Bucket="vict", Key="t-key", Body=b"x"))
            out["t puts under t's key"] = _code(lambda: t.put_object(
                Bucket="vict", Key="t-key", Body=b"x"))
            return out
        got = await asyncio.to_thread(run)
        assert got == {"arn account": "u", "mpu account": "u", "mpu reads": "part of u",
                       "named account": "u", "u reads": "ok",
                       "t reads": "AccessDenied", "t heads": "ok",
                       "u puts under t's key": "AccessDenied",
                       "t puts under t's key": "ok"}, got


async def test_only_the_kms_keys_tenant_adds_to_an_sse_kms_upload(tmp_path: Path) -> None:
    """review22c L9: an upload is sealed with its initiator's KMS key, and every part with
    it; AWS asks kms:Decrypt of UploadPart, UploadPartCopy and the completion (the parts are
    decrypted to be assembled), which no account has on another's key here. t's part into
    u's upload was sealed with u's key (an object its writer cannot read): 403 now, both
    ways, while u itself adds and completes."""
    async with _world(tmp_path) as w:
        def run() -> dict[str, str]:
            t, u = w["t"], w["u"]
            t.put_bucket_policy(Bucket="vict", Policy=json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"AWS": "u"},
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": "arn:aws:s3:::vict/*"}]}))
            t.put_object(Bucket="vict", Key="src", Body=b"s" * 10)
            part = {"Bucket": "vict", "Key": "big", "PartNumber": 1, "Body": b"p" * 10}
            by_u = u.create_multipart_upload(Bucket="vict", Key="big",
                                             ServerSideEncryption="aws:kms")["UploadId"]
            by_t = t.create_multipart_upload(Bucket="vict", Key="big",
                                             ServerSideEncryption="aws:kms")["UploadId"]
            got = {
                "t part into u's": _code(lambda: t.upload_part(**part, UploadId=by_u)),
                "t copy into u's": _code(lambda: t.upload_part_copy(
                    Bucket="vict", Key="big", PartNumber=2, UploadId=by_u,
                    CopySource={"Bucket": "vict", "Key": "src"})),
                "u part into t's": _code(lambda: u.upload_part(**part, UploadId=by_t)),
            }
            etag = u.upload_part(**part, UploadId=by_u)["ETag"]
            done = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
            got["t completes u's"] = _code(lambda: t.complete_multipart_upload(
                Bucket="vict", Key="big", UploadId=by_u, MultipartUpload=done))
            got["u completes u's"] = _code(lambda: u.complete_multipart_upload(
                Bucket="vict", Key="big", UploadId=by_u, MultipartUpload=done))
            got["u reads"] = _code(lambda: u.get_object(Bucket="vict", Key="big")["Body"].read())
            return got
        got = await asyncio.to_thread(run)
        assert got == {"t part into u's": "AccessDenied", "t copy into u's": "AccessDenied",
                       "u part into t's": "AccessDenied", "t completes u's": "AccessDenied",
                       "u completes u's": "ok", "u reads": "ok"}, got
