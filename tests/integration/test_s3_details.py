"""Small exact S3 behaviours through boto3: multipart, listing, attributes, headers, tags."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

MiB = 1024 * 1024


def _err(call, *args, **kw) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def _two_part_upload(s3, b: str, key: str, **create):  # type: ignore[no-untyped-def]
    up = s3.create_multipart_upload(Bucket=b, Key=key, **create)["UploadId"]
    parts = []
    for n, body in ((1, b"a" * 5 * MiB), (2, b"bc")):
        kw = {"ChecksumAlgorithm": "CRC32"} if "ChecksumAlgorithm" in create else {}
        r = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=n, Body=body, **kw)
        part = {"ETag": r["ETag"], "PartNumber": n}
        if "ChecksumCRC32" in r:
            part["ChecksumCRC32"] = r["ChecksumCRC32"]
        parts.append(part)
    return up, parts


def test_multipart_completion_repeat_and_parts(s3) -> None:
    b = "details-mpu"
    s3.create_bucket(Bucket=b)
    up, parts = _two_part_upload(s3, b, "k", ChecksumAlgorithm="CRC32")
    done = s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up,
                                        MultipartUpload={"Parts": parts})
    # A repeated completion answers 200 with the same ETag (S3 does; retrying clients rely
    # on it); an upload that never existed is still NoSuchUpload.
    again = s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up,
                                         MultipartUpload={"Parts": parts})
    assert again["ETag"] == done["ETag"]
    same = s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up,
                                        MultipartUpload={"Parts": parts},
                                        ChecksumCRC32=done["ChecksumCRC32"],
                                        MpuObjectSize=5 * MiB + 2)
    assert same["ETag"] == done["ETag"]
    # ...but only a repeat asking for that very object: one with fewer or more parts,
    # another ETag or checksum, or another size completes an upload that is gone (review14d).
    p1, p2 = parts
    for wrong in ({"MultipartUpload": {"Parts": [p1]}},
                  {"MultipartUpload": {"Parts": [p1, {**p2, "ETag": '"' + "0" * 32 + '"'}]}},
                  {"MultipartUpload": {"Parts": [p1, p2, {**p2, "PartNumber": 3}]}},
                  {"MultipartUpload": {"Parts": [p1, {**p2, "ChecksumCRC32": "AAAAAA=="}]}},
                  {"MultipartUpload": {"Parts": parts}, "ChecksumCRC32": "AAAAAA==-2"},
                  {"MultipartUpload": {"Parts": parts}, "MpuObjectSize": 5 * MiB}):
        assert _err(s3.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                    **wrong) == (404, "NoSuchUpload"), wrong
    assert _err(s3.complete_multipart_upload, Bucket=b, Key="k", UploadId="nope",
                MultipartUpload={"Parts": parts}) == (404, "NoSuchUpload")
    # ?partNumber past the last part: 416 InvalidPartNumber with the number asked and the
    # parts count (HEAD: the status alone); part checksums and type on GET/HEAD.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k", PartNumber=3)
    r = e.value.response
    assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == (
        416, "InvalidPartNumber")
    assert (r["Error"]["PartNumberRequested"], r["Error"]["ActualPartCount"]) == ("3", "2")
    assert _err(s3.head_object, Bucket=b, Key="k", PartNumber=3)[0] == 416
    p2 = s3.get_object(Bucket=b, Key="k", PartNumber=2, ChecksumMode="ENABLED")
    assert p2["Body"].read() == b"bc" and p2["PartsCount"] == 2
    assert p2["ChecksumCRC32"] == parts[1]["ChecksumCRC32"]
    assert p2["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "COMPOSITE" and head["ChecksumCRC32"].endswith("-2")
    # GetObjectAttributes, paged parts.
    attrs = s3.get_object_attributes(Bucket=b, Key="k", MaxParts=1, PartNumberMarker=1,
                                     ObjectAttributes=["ETag", "Checksum", "ObjectParts",
                                                       "StorageClass", "ObjectSize"])
    assert attrs["ETag"] == done["ETag"].strip('"')
    assert attrs["ObjectSize"] == 5 * MiB + 2 and attrs["StorageClass"] == "STANDARD"
    assert attrs["Checksum"]["ChecksumType"] == "COMPOSITE"
    op = attrs["ObjectParts"]
    count = op.get("TotalPartsCount", op.get("PartsCount"))  # botocore versions differ
    assert (count, op["PartNumberMarker"], op["MaxParts"], op["IsTruncated"]) == (
        2, 1, 1, False)
    assert [(p["PartNumber"], p["Size"]) for p in op["Parts"]] == [(2, 2)]
    s3.put_object(Bucket=b, Key="simple", Body=b"abc")
    attrs = s3.get_object_attributes(Bucket=b, Key="simple",
                                     ObjectAttributes=["ObjectParts", "ObjectSize"])
    assert attrs["ObjectSize"] == 3 and "ObjectParts" not in attrs
    assert _err(s3.get_object_attributes, Bucket=b, Key="simple",
                ObjectAttributes=["Bogus"]) == (400, "InvalidArgument")


def test_listing_details(s3) -> None:
    b = "details-list"
    s3.create_bucket(Bucket=b)
    keys = ["1a", "2b", "3c", "\nx"]
    for k in keys:
        s3.put_object(Bucket=b, Key=k, Body=b"")
    for lister in (s3.list_objects, s3.list_objects_v2):
        r = lister(Bucket=b, MaxKeys=0)
        assert r["IsTruncated"] is False and "Contents" not in r
    # Continuation token and start-after together: start-after is ignored (SDKs repeat it).
    first = s3.list_objects_v2(Bucket=b, MaxKeys=2, StartAfter="1")
    assert [c["Key"] for c in first["Contents"]] == ["1a", "2b"]
    nxt = s3.list_objects_v2(Bucket=b, MaxKeys=2, StartAfter="1",
                             ContinuationToken=first["NextContinuationToken"])
    assert [c["Key"] for c in nxt["Contents"]] == ["3c"]
    # ListObjects v1 with encoding-type=url (botocore asks for it) leaves Prefix as sent.
    r = s3.list_objects(Bucket=b, Prefix="\n")
    assert r["Prefix"] == "\n" and [c["Key"] for c in r["Contents"]] == ["\nx"]


def test_list_buckets_pages(cluster) -> None:
    import json
    import uuid

    from tests.integration.test_tenants import s3_for, tessera

    name = f"pager-{uuid.uuid4().hex[:8]}"
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    cred = json.loads(tessera(cluster, "key", "create", "--tenant", name, "--json").stdout)
    s3 = s3_for(cluster, cred["access_key_id"], cred["secret_access_key"])
    assert s3.list_buckets(MaxBuckets=1)["Buckets"] == []
    for suffix in ("a", "b", "c"):
        s3.create_bucket(Bucket=f"{name}-{suffix}")
    region = cluster.env["AWS_DEFAULT_REGION"]
    # BucketRegion on each bucket when the request has one of the paging parameters (AWS)
    assert all("BucketRegion" not in x for x in s3.list_buckets()["Buckets"])
    r = s3.list_buckets(MaxBuckets=2)
    assert [x["Name"] for x in r["Buckets"]] == [f"{name}-a", f"{name}-b"]
    assert [x["BucketRegion"] for x in r["Buckets"]] == [region, region]
    r2 = s3.list_buckets(BucketRegion=region)
    assert [x["BucketRegion"] for x in r2["Buckets"]] == [region] * 3
    r = s3.list_buckets(MaxBuckets=2, ContinuationToken=r["ContinuationToken"])
    assert [x["Name"] for x in r["Buckets"]] == [f"{name}-c"] and "ContinuationToken" not in r
    r = s3.list_buckets(Prefix=f"{name}-b")
    assert [x["Name"] for x in r["Buckets"]] == [f"{name}-b"] and r["Prefix"] == f"{name}-b"
    assert _err(s3.list_buckets, MaxBuckets=10001)[1] == "InvalidArgument"


def test_object_header_details(s3) -> None:
    b = "details-headers"
    s3.create_bucket(Bucket=b)
    # A missing key's 404 says it is no delete marker.
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=b, Key="missing")
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "false"
    # Tags come back in key order.
    s3.put_object(Bucket=b, Key="t", Body=b"x", Tagging="foo=bar&bar=")
    assert s3.get_object_tagging(Bucket=b, Key="t")["TagSet"] == [
        {"Key": "bar", "Value": ""}, {"Key": "foo", "Value": "bar"}]
    # aws-chunked frames the request body; it is not stored as the object's encoding.
    s3.put_object(Bucket=b, Key="gz", Body=b"x", ContentEncoding="gzip, aws-chunked")
    assert s3.head_object(Bucket=b, Key="gz")["ContentEncoding"] == "gzip"
    s3.put_object(Bucket=b, Key="plain", Body=b"x", ContentEncoding="aws-chunked")
    assert "ContentEncoding" not in s3.head_object(Bucket=b, Key="plain")
    # SSE-S3 needs no header to read; sending x-amz-server-side-encryption on GET/HEAD is 400.
    s3.put_object(Bucket=b, Key="enc", Body=b"x", ServerSideEncryption="AES256")

    def add_sse(params, **_):  # type: ignore[no-untyped-def]
        params["headers"]["x-amz-server-side-encryption"] = "AES256"

    s3.meta.events.register("before-call.s3.HeadObject", add_sse)
    try:
        assert _err(s3.head_object, Bucket=b, Key="enc")[0] == 400
    finally:
        s3.meta.events.unregister("before-call.s3.HeadObject", add_sse)
    assert s3.head_object(Bucket=b, Key="enc")["ServerSideEncryption"] == "AES256"
    # A part number past the last part is refused before the SSE-C key is asked for.
    s3.put_object(Bucket=b, Key="ssec", Body=b"x", SSECustomerAlgorithm="AES256",
                  SSECustomerKey="k" * 32)
    assert _err(s3.get_object, Bucket=b, Key="ssec", PartNumber=2) == (416, "InvalidPartNumber")


def test_website_redirect_location_is_stored_and_copied_only_when_named(s3) -> None:
    """x-amz-website-redirect-location was accepted and dropped; S3 stores it with the object
    (PUT, multipart), returns it on GET/HEAD, and a copy keeps it only if the request names
    it (not with COPY or REPLACE alone). A value that is not a path or http(s) URL is 400."""
    b = "details-redirect"
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="a", Body=b"x", WebsiteRedirectLocation="/other.html")
    assert s3.head_object(Bucket=b, Key="a")["WebsiteRedirectLocation"] == "/other.html"
    assert s3.get_object(Bucket=b, Key="a")["WebsiteRedirectLocation"] == "/other.html"
    assert _err(s3.put_object, Bucket=b, Key="bad", Body=b"x",
                WebsiteRedirectLocation="other.html") == (400, "InvalidRedirectLocation")
    assert _err(s3.head_object, Bucket=b, Key="bad")[0] == 404
    src = {"Bucket": b, "Key": "a"}
    for kw in ({}, {"MetadataDirective": "REPLACE"}):
        s3.copy_object(Bucket=b, Key="c", CopySource=src, **kw)
        assert "WebsiteRedirectLocation" not in s3.head_object(Bucket=b, Key="c")
    s3.copy_object(Bucket=b, Key="c", CopySource=src, WebsiteRedirectLocation="https://e.x/")
    assert s3.head_object(Bucket=b, Key="c")["WebsiteRedirectLocation"] == "https://e.x/"
    # Changing only the redirect makes a copy onto itself legal.
    s3.copy_object(Bucket=b, Key="a", CopySource=src, WebsiteRedirectLocation="/new")
    assert s3.head_object(Bucket=b, Key="a")["WebsiteRedirectLocation"] == "/new"
    up = s3.create_multipart_upload(Bucket=b, Key="m", WebsiteRedirectLocation="/m")["UploadId"]
    etag = s3.upload_part(Bucket=b, Key="m", UploadId=up, PartNumber=1, Body=b"p")["ETag"]
    s3.complete_multipart_upload(Bucket=b, Key="m", UploadId=up,
                                 MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
    assert s3.head_object(Bucket=b, Key="m")["WebsiteRedirectLocation"] == "/m"


def test_malformed_checksum_header_is_invalid_request(s3) -> None:
    """An x-amz-checksum-* value that is not the base64 of a digest of its size is 400
    InvalidRequest, as S3 answers (it was BadDigest, as if data had been compared); a
    well-formed wrong value is still BadDigest; nothing is stored either way."""
    b = "details-cksum"
    s3.create_bucket(Bucket=b)
    for kw in ({"ChecksumCRC32": "zz"}, {"ChecksumCRC32": "AAAA"},
               {"ChecksumSHA256": "AAAAAA=="}, {"ChecksumCRC64NVME": "AAAAAA=="}):
        assert _err(s3.put_object, Bucket=b, Key="k", Body=b"x", **kw) == (400, "InvalidRequest")
    assert _err(s3.put_object, Bucket=b, Key="k", Body=b"x",
                ChecksumCRC32="AAAAAA==") == (400, "BadDigest")
    assert _err(s3.head_object, Bucket=b, Key="k")[0] == 404


def test_complete_checks_announced_object_size(s3) -> None:
    """x-amz-mp-object-size (boto3 MpuObjectSize) was accepted and ignored: S3 refuses a
    completion whose parts add up to another size (400 InvalidRequest) and the upload stays
    completable; a malformed value is refused too; the right size completes."""
    b = "details-mpsize"
    s3.create_bucket(Bucket=b)
    up, parts = _two_part_upload(s3, b, "k")
    size = 5 * MiB + 2

    def complete(value: str):  # type: ignore[no-untyped-def]
        def add(request, **_kw):  # type: ignore[no-untyped-def]
            request.headers["x-amz-mp-object-size"] = value
        s3.meta.events.register_first("before-sign.s3.CompleteMultipartUpload", add)
        try:
            return s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up,
                                                MultipartUpload={"Parts": parts})
        finally:
            s3.meta.events.unregister("before-sign.s3.CompleteMultipartUpload", add)

    assert _err(complete, str(size + 1)) == (400, "InvalidRequest")
    assert _err(complete, "-1") == (400, "InvalidRequest")
    assert _err(s3.head_object, Bucket=b, Key="k")[0] == 404
    complete(str(size))
    assert s3.head_object(Bucket=b, Key="k")["ContentLength"] == size


def test_append_by_write_offset_is_refused_not_an_overwrite(s3) -> None:
    """x-amz-write-offset-bytes (an append, S3 Express) was ignored, so an 'append' replaced
    the object with the appended bytes: 501 NotImplemented now, the object untouched."""
    b = "details-append"
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"head")

    def add(request, **_kw):  # type: ignore[no-untyped-def]
        request.headers["x-amz-write-offset-bytes"] = "4"
    s3.meta.events.register_first("before-sign.s3.PutObject", add)
    try:
        assert _err(s3.put_object, Bucket=b, Key="k", Body=b"tail") == (501, "NotImplemented")
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", add)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"head"


def test_complete_takes_a_composite_checksum_with_its_part_count(s3) -> None:
    """The whole-object checksum at Complete may be the composite value with its `-<parts>`
    suffix (ceph/s3-tests sends it so): well-formed, so it is compared, not refused."""
    import base64
    import zlib

    b = "details-composite"
    s3.create_bucket(Bucket=b)
    up, parts = _two_part_upload(s3, b, "k", ChecksumAlgorithm="CRC32")
    raw = b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in parts)
    composite = base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode() + "-2"
    done = s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, ChecksumCRC32=composite,
                                        MultipartUpload={"Parts": parts})
    assert done["ChecksumCRC32"] == composite
    up, parts = _two_part_upload(s3, b, "k2", ChecksumAlgorithm="CRC32")
    assert _err(s3.complete_multipart_upload, Bucket=b, Key="k2", UploadId=up,
                ChecksumCRC32="AAAAAA==-2", MultipartUpload={"Parts": parts}) == (400, "BadDigest")


def test_composite_suffix_only_at_complete_and_only_its_part_count(s3) -> None:
    """`-<parts>` was taken on every path and its count never read: a PutObject checksum
    ending in `-1` was compared (BadDigest), and a 2-part Complete took `-7`, `-` or `-02`.
    Now the suffix is InvalidRequest, like any malformed value, unless it is a Complete's own
    part count; the upload stays open."""
    import base64
    import zlib

    b = "details-composite-count"
    s3.create_bucket(Bucket=b)
    crc = base64.b64encode(zlib.crc32(b"hi").to_bytes(4, "big")).decode()
    assert _err(s3.put_object, Bucket=b, Key="p", Body=b"hi",
                ChecksumCRC32=crc + "-1") == (400, "InvalidRequest")
    assert _err(s3.head_object, Bucket=b, Key="p")[0] == 404
    up, parts = _two_part_upload(s3, b, "k", ChecksumAlgorithm="CRC32")
    raw = b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in parts)
    composite = base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode()
    for suffix in ("-7", "-", "-02", "-1", "-2-2", "-x"):
        assert _err(s3.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                    ChecksumCRC32=composite + suffix,
                    MultipartUpload={"Parts": parts}) == (400, "InvalidRequest"), suffix
    assert _err(s3.head_object, Bucket=b, Key="k")[0] == 404
    done = s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up,
                                        ChecksumCRC32=composite + "-2",
                                        MultipartUpload={"Parts": parts})
    assert done["ChecksumCRC32"] == composite + "-2"


def test_list_objects_v1_refuses_start_after(s3) -> None:
    """`start-after` belongs to ListObjectsV2: a V1 listing (no list-type, or any list-type
    other than 2) that names it is 400 InvalidArgument, as AWS answers (amazonka#376 quotes
    it); it was ignored, so a client paging from a key got the listing from the start."""
    b = "details-v1-start-after"
    s3.create_bucket(Bucket=b)
    for k in ("a", "b", "c"):
        s3.put_object(Bucket=b, Key=k, Body=b"")

    def listing(query: str) -> tuple[int, str] | list[str]:
        def add(request, **_kw):  # type: ignore[no-untyped-def]
            request.url += ("&" if "?" in request.url else "?") + query
        s3.meta.events.register_first("before-sign.s3.ListObjects", add)
        try:
            return [o["Key"] for o in s3.list_objects(Bucket=b).get("Contents", [])]
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
        finally:
            s3.meta.events.unregister("before-sign.s3.ListObjects", add)

    for query in ("start-after=a", "start-after=", "list-type=3&start-after=a",
                  "list-type=1&start-after=b"):
        assert listing(query) == (400, "InvalidArgument"), query
    assert listing("list-type=3") == ["a", "b", "c"]  # any list-type but 2 is V1, as on AWS
    assert listing("marker=a") == ["b", "c"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=b, StartAfter="a")["Contents"]] == \
        ["b", "c"]


def test_sdk_checksum_algorithm_that_disagrees_with_the_value_header(s3) -> None:
    """x-amz-sdk-checksum-algorithm naming another algorithm than the x-amz-checksum-* value
    sent is 400 InvalidRequest 'Value for x-amz-sdk-checksum-algorithm header is invalid.',
    S3's answer (versitygw#1598 quotes it); the message was Tessera's own."""
    b = "details-sdk-alg"
    s3.create_bucket(Bucket=b)

    def add(request, **_kw):  # type: ignore[no-untyped-def]
        request.headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
    s3.meta.events.register_first("before-sign.s3.PutObject", add)
    try:
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=b, Key="k", Body=b"x", ChecksumCRC32="jNwWgw==")
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", add)
    err = e.value.response["Error"]
    assert (err["Code"], err["Message"]) == (
        "InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
    assert _err(s3.head_object, Bucket=b, Key="k")[0] == 404
    s3.put_object(Bucket=b, Key="k", Body=b"x", ChecksumCRC32="jNwWgw==")
