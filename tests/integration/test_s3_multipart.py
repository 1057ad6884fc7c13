"""Multipart uploads end to end with boto3, s3transfer and the AWS CLI."""

from __future__ import annotations

import base64
import hashlib
import random
import subprocess
import uuid
from pathlib import Path

import pytest
from awscrt import checksums as crt
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster

MiB = 1024 * 1024
CONFIGS = [{}, {"request_checksum_calculation": "when_required"}]


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def md5_of_md5s(parts: list[bytes]) -> str:
    h = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{h}-{len(parts)}"'


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


@pytest.fixture(params=CONFIGS, ids=["default", "when_required"])
def s3(request: pytest.FixtureRequest, cluster: LocalCluster):  # type: ignore[no-untyped-def]
    return cluster.client(**request.param)


def upload(s3, bucket: str, key: str, parts: list[bytes], **create) -> dict:  # type: ignore[no-untyped-def]
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)
    uid = up["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=p)
        done.append({"PartNumber": i, "ETag": r["ETag"]})
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": done})


def test_three_parts_byte_identical(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = uniq("mp")
    s3.create_bucket(Bucket=bucket)
    parts = [data(5 * MiB, 1), data(5 * MiB, 2), data(1 * MiB, 3)]
    res = upload(s3, bucket, "big/obj", parts, ContentType="text/x-test",
                 Metadata={"color": "blue"})
    assert res["ETag"] == md5_of_md5s(parts)
    assert res["Key"] == "big/obj" and res["Bucket"] == bucket
    got = s3.get_object(Bucket=bucket, Key="big/obj")
    assert got["Body"].read() == b"".join(parts)
    assert got["ETag"] == md5_of_md5s(parts)
    assert got["ContentType"] == "text/x-test" and got["Metadata"] == {"color": "blue"}
    p2 = s3.get_object(Bucket=bucket, Key="big/obj", PartNumber=2)
    assert p2["PartsCount"] == 3 and p2["Body"].read() == parts[1]
    h3 = s3.head_object(Bucket=bucket, Key="big/obj", PartNumber=3)
    assert h3["PartsCount"] == 3 and h3["ContentLength"] == MiB
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="big/obj", PartNumber=4)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416  # InvalidPartNumber
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_transfer_upload_download_40mib(cluster: LocalCluster, tmp_path: Path) -> None:
    s3 = cluster.client()
    bucket = uniq("mp-xfer")
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "src.bin"
    src.write_bytes(data(40 * MiB, 7))
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB,
                         max_concurrency=4, num_download_attempts=1)  # a cut body fails
    s3.upload_file(str(src), bucket, "file.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="file.bin")
    assert head["ContentLength"] == 40 * MiB and head["ETag"].endswith('-5"')
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "file.bin", str(dst), Config=cfg)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(
        src.read_bytes()).digest()


def test_complete_errors(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = uniq("mp-err")
    s3.create_bucket(Bucket=bucket)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1,
                        Body=b"a" * 1024)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=2,
                        Body=b"b" * 1024)["ETag"]

    def complete(parts: list[dict]):  # type: ignore[no-untyped-def]
        return s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                            MultipartUpload={"Parts": parts})

    with pytest.raises(ClientError) as e:
        complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}])
    assert code(e) == "InvalidPartOrder"
    with pytest.raises(ClientError) as e:
        complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}])
    assert code(e) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        complete([{"PartNumber": 1, "ETag": e2}])
    assert code(e) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}])
    assert code(e) == "EntityTooSmall"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # a list of AWS's maximum of 10,000 parts (~900 KB of XML) is read whole: the first part
    # never uploaded is named (it was MalformedXML, the body cut at what one read held)
    with pytest.raises(ClientError) as e:
        complete([{"PartNumber": 1, "ETag": e1}]
                 + [{"PartNumber": n, "ETag": e2} for n in range(3, 10001)])
    assert code(e) == "InvalidPart"
    # the list the signature covers, or none: one changed after signing (part 2's ETag made
    # part 1's, same length) is refused; it was completed as sent
    def tamper(request, **_):  # type: ignore[no-untyped-def]
        request.body = request.body.replace(e2.encode(), e1.encode())

    s3.meta.events.register_first("before-send.s3.CompleteMultipartUpload", tamper)
    try:
        with pytest.raises(ClientError) as e:
            complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}])
    finally:
        s3.meta.events.unregister("before-send.s3.CompleteMultipartUpload", tamper)
    assert code(e) == "XAmzContentSHA256Mismatch"
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=10001, Body=b"x")
    assert code(e) == "InvalidArgument"
    # Only the last part may be small: completing with part 2 alone works, and the
    # unlisted part 1 is dropped.
    res = complete([{"PartNumber": 2, "ETag": e2}])
    assert res["ETag"] == md5_of_md5s([b"b" * 1024])
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"b" * 1024
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="k", UploadId=uid)
    assert code(e) == "NoSuchUpload"


def test_abort_then_no_such_upload(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = uniq("mp-abort")
    s3.create_bucket(Bucket=bucket)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"x" * 100)
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)
    for call in (
        lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"y"),
        lambda: s3.list_parts(Bucket=bucket, Key="k", UploadId=uid),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid),
        lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]}),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "NoSuchUpload"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.delete_bucket(Bucket=bucket)  # no upload left behind


def test_overwrite_part_keeps_latest(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = uniq("mp-over")
    s3.create_bucket(Bucket=bucket)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"old")
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1,
                          Body=b"new!")["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, etag, 4)]
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new!"


def test_list_parts_and_uploads_paging(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    bucket = uniq("mp-list")
    s3.create_bucket(Bucket=bucket)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="a/1")["UploadId"]
    for n in (1, 2, 3):
        s3.upload_part(Bucket=bucket, Key="a/1", UploadId=uid, PartNumber=n, Body=b"p" * n)
    page = s3.list_parts(Bucket=bucket, Key="a/1", UploadId=uid, MaxParts=2)
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2]
    assert page["IsTruncated"] and page["NextPartNumberMarker"] == 2
    page = s3.list_parts(Bucket=bucket, Key="a/1", UploadId=uid, PartNumberMarker=2)
    assert [p["PartNumber"] for p in page["Parts"]] == [3] and not page["IsTruncated"]
    ids = {uid}
    for key in ("a/1", "a/2", "b", "c/x"):
        ids.add(s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
    seen = []
    kw: dict[str, str] = {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2, **kw)
        seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        kw = {"KeyMarker": page["NextKeyMarker"],
              "UploadIdMarker": page["NextUploadIdMarker"]}
    assert len(seen) == 5 and {u for _, u in seen} == ids
    assert [k for k, _ in seen] == sorted(k for k, _ in seen)
    assert [k for k, _ in seen].count("a/1") == 2
    page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/", "c/"]
    assert [u["Key"] for u in page["Uploads"]] == ["b"]
    # AWS: CommonPrefixes is filtered out if not lexicographically greater than key-marker
    page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/", KeyMarker="a/1")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["c/"]
    assert [u["Key"] for u in page["Uploads"]] == ["b"]
    page = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/")
    assert sorted(u["Key"] for u in page["Uploads"]) == ["a/1", "a/1", "a/2"]
    for key, u in seen:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=u)


def test_upload_part_copy_ranges(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = uniq("mp-upc")
    s3.create_bucket(Bucket=bucket)
    src = data(6 * MiB + 123, 11)
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    r1 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceRange=f"bytes=0-{5 * MiB - 1}")
    r2 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=2,
                             CopySource=f"{bucket}/src",
                             CopySourceRange=f"bytes={5 * MiB}-{len(src) - 1}")
    assert r1["CopyPartResult"]["ETag"] == f'"{hashlib.md5(src[:5 * MiB]).hexdigest()}"'
    # an upload made without an algorithm: AWS documents a part checksum in CopyPartResult
    # only for the algorithm the upload was created with (none here; CRC64NVME was sent)
    assert not [k for k in r1["CopyPartResult"] if k.startswith("Checksum")], r1
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=3,
                            CopySource=f"{bucket}/src", CopySourceRange="bytes=0-99999999")
    assert code(e) == "InvalidRange"
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=3,
                            CopySource=f"{bucket}/src", CopySourceRange="0-5")
    assert code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=3,
                            CopySource=f"{bucket}/src", CopySourceIfMatch='"nope"')
    assert code(e) == "PreconditionFailed"
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == src


def test_composite_crc32_checksum(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    bucket = uniq("mp-crc")
    s3.create_bucket(Bucket=bucket)
    parts = [data(5 * MiB, 21), data(2 * MiB, 22)]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k",
                                     ChecksumAlgorithm="CRC32")["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=i, Body=p,
                           ChecksumAlgorithm="CRC32")
        done.append({"PartNumber": i, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    raw = [crt.crc32(p).to_bytes(4, "big") for p in parts]
    assert [d["ChecksumCRC32"] for d in done] == [base64.b64encode(r).decode() for r in raw]
    res = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                       MultipartUpload={"Parts": done})
    want = base64.b64encode(crt.crc32(b"".join(raw)).to_bytes(4, "big")).decode() + "-2"
    assert res["ChecksumCRC32"] == want
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == want
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)


def test_full_object_crc64nvme(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    bucket = uniq("mp-crc64")
    s3.create_bucket(Bucket=bucket)
    parts = [data(5 * MiB, 31), data(3 * MiB + 5, 32)]
    whole = b"".join(parts)
    want = base64.b64encode(crt.crc64nvme(whole).to_bytes(8, "big")).decode()
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC64NVME",
                                     ChecksumType="FULL_OBJECT")["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=i, Body=p,
                           ChecksumAlgorithm="CRC64NVME")
        done.append({"PartNumber": i, "ETag": r["ETag"]})
    res = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                       MultipartUpload={"Parts": done},
                                       ChecksumCRC64NVME=want, ChecksumType="FULL_OBJECT")
    assert res["ChecksumCRC64NVME"] == want and res["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumCRC64NVME"] == want
    assert got["Body"].read() == whole  # botocore validates the full-object CRC


def test_conditional_complete(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = uniq("mp-cond")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"exists")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1,
                          Body=b"new")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                     MultipartUpload=parts, IfNoneMatch="*")
    assert code(e) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"exists"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                     MultipartUpload=parts, IfMatch='"0000"')
    assert code(e) == "PreconditionFailed"
    cur = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                 MultipartUpload=parts, IfMatch=cur)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"


def test_aws_cli_cp_and_list_uploads(cluster: LocalCluster, tmp_path: Path) -> None:
    s3 = cluster.client()
    bucket = uniq("mp-cli")
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "twenty.bin"
    src.write_bytes(data(20 * MiB, 41))
    env = cluster.cli_env()  # one attempt: a failure is not retried away
    ep = ["--endpoint-url", cluster.endpoint]
    r = subprocess.run(["aws", *ep, "s3", "cp", str(src), f"s3://{bucket}/twenty.bin"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    head = s3.head_object(Bucket=bucket, Key="twenty.bin")
    assert head["ContentLength"] == 20 * MiB and head["ETag"].endswith('-3"')
    dst = tmp_path / "back.bin"
    r = subprocess.run(["aws", *ep, "s3", "cp", f"s3://{bucket}/twenty.bin", str(dst)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == src.read_bytes()
    uid = s3.create_multipart_upload(Bucket=bucket, Key="pending")["UploadId"]
    r = subprocess.run(["aws", *ep, "s3api", "list-multipart-uploads", "--bucket", bucket,
                        "--output", "json"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert uid in r.stdout and "pending" in r.stdout
    s3.abort_multipart_upload(Bucket=bucket, Key="pending", UploadId=uid)


def test_repeated_complete_with_if_none_match(s3) -> None:  # type: ignore[no-untyped-def]
    """A completion repeated with `If-None-Match: *` after it made the object is answered as
    S3 answers it (Swift's s3api test_if_none_match_star_mpu, run against AWS; moto#8380):
    200 with the same part list (the retry of a completion whose answer was lost: its
    condition held when it committed), 404 NoSuchUpload with another; a new upload to the
    key is refused 412 PreconditionFailed."""
    bucket = uniq("mp-inm")
    s3.create_bucket(Bucket=bucket)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="k", UploadId=uid,
                                                      PartNumber=n, Body=b"x" * 5 * MiB)["ETag"]}
             for n in (1, 2, 3)]
    first = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, IfNoneMatch="*",
                                         MultipartUpload={"Parts": parts[:2]})
    for other in (parts, parts[:1]):
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                         IfNoneMatch="*", MultipartUpload={"Parts": other})
        assert code(e) == "NoSuchUpload"
    again = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, IfNoneMatch="*",
                                         MultipartUpload={"Parts": parts[:2]})
    assert again["ETag"] == first["ETag"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, IfNoneMatch="*",
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert code(e) == "PreconditionFailed"
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == 10 * MiB
