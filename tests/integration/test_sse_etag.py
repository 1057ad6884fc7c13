"""ETags of encrypted objects, as AWS documents them (boto3 on the shared cluster).

A single-part object under SSE-S3 (or plaintext) has the MD5 of its data as ETag; under
SSE-KMS or SSE-C an opaque ETag that is not that MD5, and so do the parts of an SSE-KMS or
SSE-C multipart upload. Conditions (If-Match, copy-source-if-match, conditional writes) use
the ETag the server answered.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster
from tests.integration.test_kms import SSEC_A, SSEC_B, create_key, error, new_tenant, ssec

MD5_FORM = re.compile(r'"[0-9a-f]{32}"')


def md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


@pytest.fixture(scope="module")
def kms_tenant(cluster: LocalCluster) -> tuple[str, Any]:
    tenant, s3 = new_tenant(cluster, "etag")
    create_key(cluster, tenant, "etag")
    return tenant, s3


KMS = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/etag"}


@pytest.mark.parametrize("size", [100, 300_000])  # an inline and an erasure-coded object
def test_single_part_etag_is_md5_only_for_sse_s3(kms_tenant: tuple[str, Any],
                                                 size: int) -> None:
    tenant, s3 = kms_tenant
    data = os.urandom(size)
    for key, enc, is_md5 in (("plain", {}, True),
                             ("s3", {"ServerSideEncryption": "AES256"}, True),
                             ("kms", KMS, False), ("ssec", ssec(SSEC_A), False)):
        key = f"{key}-{size}"
        put = s3.put_object(Bucket=tenant, Key=key, Body=data, **enc)
        etag = put["ETag"]
        assert MD5_FORM.fullmatch(etag), etag
        assert (etag == md5(data)) is is_md5, (key, etag)
        read = {k: v for k, v in enc.items() if k.startswith("SSECustomer")}
        assert s3.head_object(Bucket=tenant, Key=key, **read)["ETag"] == etag
        got = s3.get_object(Bucket=tenant, Key=key, **read)
        assert got["ETag"] == etag and got["Body"].read() == data
        listed = s3.list_objects_v2(Bucket=tenant, Prefix=key)["Contents"]
        assert [o["ETag"] for o in listed] == [etag]
    # The opaque ETag is keyed: the same data under the same key has the same ETag, under
    # another KMS key or customer key another one.
    kms_etag = s3.put_object(Bucket=tenant, Key=f"kms-{size}", Body=data, **KMS)["ETag"]
    assert s3.put_object(Bucket=tenant, Key=f"again-{size}", Body=data, **KMS)["ETag"] == kms_etag
    other = s3.put_object(Bucket=tenant, Key=f"other-{size}", Body=data,
                          ServerSideEncryption="aws:kms")["ETag"]  # the default key
    other_c = s3.put_object(Bucket=tenant, Key=f"other-c-{size}", Body=data,
                            **ssec(SSEC_B))["ETag"]
    assert len({kms_etag, etag, other, other_c, md5(data)}) == 5


def test_content_md5_is_still_checked_against_the_data(kms_tenant: tuple[str, Any]) -> None:
    tenant, s3 = kms_tenant
    data = b"checked"
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    for enc in (KMS, ssec(SSEC_A)):
        put = s3.put_object(Bucket=tenant, Key="cmd5", Body=data, ContentMD5=good, **enc)
        assert put["ETag"] != md5(data)
        assert error(s3.put_object, Bucket=tenant, Key="cmd5", Body=data, ContentMD5=bad,
                     **enc)[:2] == (400, "BadDigest")


def test_conditions_use_the_answered_etag(kms_tenant: tuple[str, Any]) -> None:
    tenant, s3 = kms_tenant
    data = b"conditional"
    etag = s3.put_object(Bucket=tenant, Key="c", Body=data, **KMS)["ETag"]
    assert s3.get_object(Bucket=tenant, Key="c", IfMatch=etag)["Body"].read() == data
    assert error(s3.get_object, Bucket=tenant, Key="c", IfMatch=md5(data))[:2] == (
        412, "PreconditionFailed")
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=tenant, Key="c", IfNoneMatch=etag)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    # Conditional writes compare the stored (opaque) ETag.
    assert error(s3.put_object, Bucket=tenant, Key="c", Body=b"x", IfMatch=md5(data),
                 **KMS)[:2] == (412, "PreconditionFailed")
    etag2 = s3.put_object(Bucket=tenant, Key="c", Body=b"y", IfMatch=etag, **KMS)["ETag"]
    # Copy: the source condition takes the source's ETag; the target's ETag follows the
    # target's encryption (SSE-S3: the MD5 of the data; SSE-KMS: opaque again).
    src = {"Bucket": tenant, "Key": "c"}
    assert error(s3.copy_object, Bucket=tenant, Key="d", CopySource=src,
                 CopySourceIfMatch=md5(b"y"))[:2] == (412, "PreconditionFailed")
    out = s3.copy_object(Bucket=tenant, Key="d", CopySource=src, CopySourceIfMatch=etag2,
                         ServerSideEncryption="AES256")
    assert out["CopyObjectResult"]["ETag"] == md5(b"y")
    out = s3.copy_object(Bucket=tenant, Key="e", CopySource={"Bucket": tenant, "Key": "d"},
                         **KMS)
    assert out["CopyObjectResult"]["ETag"] == etag2 != md5(b"y")  # same data, same key
    assert s3.head_object(Bucket=tenant, Key="e")["ETag"] == out["CopyObjectResult"]["ETag"]


def test_multipart_parts_of_kms_and_sse_c_uploads_have_opaque_etags(
        kms_tenant: tuple[str, Any]) -> None:
    tenant, s3 = kms_tenant
    parts_data = [os.urandom(5 * 1024 * 1024), b"tail"]
    for key, enc, is_md5 in (("mp-s3", {"ServerSideEncryption": "AES256"}, True),
                             ("mp-kms", KMS, False), ("mp-ssec", ssec(SSEC_A), False)):
        part_enc = {k: v for k, v in enc.items() if k.startswith("SSECustomer")}
        uid = s3.create_multipart_upload(Bucket=tenant, Key=key, **enc)["UploadId"]
        etags = []
        for n, data in enumerate(parts_data, 1):
            e = s3.upload_part(Bucket=tenant, Key=key, UploadId=uid, PartNumber=n, Body=data,
                               **part_enc)["ETag"]
            assert MD5_FORM.fullmatch(e) and (e == md5(data)) is is_md5, (key, e)
            etags.append(e)
        # A part sent again with the same data keeps its ETag (clients complete with the
        # first one they got).
        assert s3.upload_part(Bucket=tenant, Key=key, UploadId=uid, PartNumber=2,
                              Body=parts_data[1], **part_enc)["ETag"] == etags[1]
        listed = s3.list_parts(Bucket=tenant, Key=key, UploadId=uid)["Parts"]
        assert [p["ETag"] for p in listed] == etags
        done = s3.complete_multipart_upload(
            Bucket=tenant, Key=key, UploadId=uid, **part_enc,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                       for n, e in enumerate(etags, 1)]})
        joined = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
        assert done["ETag"] == f'"{hashlib.md5(joined).hexdigest()}-2"'
        head = s3.head_object(Bucket=tenant, Key=key, **part_enc)
        assert head["ETag"] == done["ETag"]
        assert s3.get_object(Bucket=tenant, Key=key, IfMatch=done["ETag"], **part_enc)[
            "Body"].read() == b"".join(parts_data)
