"""User metadata and RFC 2047 encoded-words, AWS's documented rule ("Working with object
metadata"): a value made of encoded-words is decoded before it is stored, and a stored value
that is not US-ASCII comes back as one "=?UTF-8?B?...?=" word, on every way in (PutObject, a
POST form, CopyObject with REPLACE, CreateMultipartUpload) and out (GET and HEAD). They used
to be stored as sent and raw UTF-8 went back raw (botocore reads it as Latin-1)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.integration.cluster import LocalCluster

# sent -> what GET and HEAD answer
WORDS = {
    "b": ("=?UTF-8?B?w6k=?=", "=?UTF-8?B?w6k=?="),
    "q": ("=?utf-8?q?caf=C3=A9_au_lait?=", "=?UTF-8?B?Y2Fmw6kgYXUgbGFpdA==?="),
    "two": ("=?UTF-8?B?w6k=?= =?ISO-8859-1?Q?=E9?=", "=?UTF-8?B?w6nDqQ==?="),
    "ascii": ("=?UTF-8?B?YWJj?=", "abc"),  # US-ASCII once decoded: presented as is
    "mixed": ("x =?UTF-8?B?w6k=?=", "x =?UTF-8?B?w6k=?="),  # not only words: kept
    "bad": ("=?no-such-charset?B?w6k=?=", "=?no-such-charset?B?w6k=?="),
    "plain": ("plain value", "plain value"),
    "cp1252": ("=?Windows-1252?Q?=80?=", "=?UTF-8?B?4oKs?="),
    # review14b #3: Python-only codecs decoded these to a lone surrogate: 500, retried
    "utf7": ("=?utf-7?Q?+2AA-?=", "=?utf-7?Q?+2AA-?="),
    "escape": ("=?unicode_escape?Q?=5Cud800?=", "=?unicode_escape?Q?=5Cud800?="),
}
SENT = {k: v[0] for k, v in WORDS.items()}
WANT = {k: v[1] for k, v in WORDS.items()}


@pytest.fixture(scope="module")
def m(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    bucket = f"meta-words-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    return {"s3": s3, "bucket": bucket}


def _answers(m: dict[str, Any], key: str) -> None:
    s3, b = m["s3"], m["bucket"]
    assert s3.head_object(Bucket=b, Key=key)["Metadata"] == WANT
    got = s3.get_object(Bucket=b, Key=key)
    assert got["Metadata"] == WANT
    got["Body"].read()


def test_put_copy_and_multipart_decode_words_and_answer_them_encoded(m: dict[str, Any]) -> None:
    s3, b = m["s3"], m["bucket"]
    s3.put_object(Bucket=b, Key="put", Body=b"x", Metadata=SENT)
    _answers(m, "put")
    s3.put_object(Bucket=b, Key="src", Body=b"x")
    s3.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "src"},
                   Metadata=SENT, MetadataDirective="REPLACE")
    _answers(m, "copy")
    s3.copy_object(Bucket=b, Key="copy2", CopySource={"Bucket": b, "Key": "copy"})
    _answers(m, "copy2")  # COPY keeps the decoded values
    up = s3.create_multipart_upload(Bucket=b, Key="mp", Metadata=SENT)["UploadId"]
    etag = s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=b"x")["ETag"]
    s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag}]})
    _answers(m, "mp")


def test_post_form_decodes_words(m: dict[str, Any]) -> None:
    fields = {f"x-amz-meta-{k}": v for k, v in SENT.items()}
    form = m["s3"].generate_presigned_post(m["bucket"], "post", Fields=fields,
                                           Conditions=[{k: v} for k, v in fields.items()])
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f", b"body")},
                      allow_redirects=False, timeout=60)
    assert r.status_code == 204, r.text
    _answers(m, "post")
