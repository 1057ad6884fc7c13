"""tenant21: tenant `u` forges requests at tenant `t`'s bucket by name, with its own valid
key: virtual-host and path style, presigned URLs, a POST form, copy sources spelled every
way, UploadPartCopy, and the subresource operations (versions, attributes, ACL, restore,
select). Every answer is AWS's 403 AccessDenied and carries none of `t`'s bytes. Served by
an in-process gateway over simulated nodes, spoken to by boto3 and raw signed HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3.sigv4_sign import sign_headers
from ops.botoconfig import no_retries
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config, wired_cluster

DOMAIN = "s3.test"
SECRET = b"t's secret bytes " * 64


def _client(endpoint: str, ak: str, sk: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                        aws_secret_access_key=sk, region_name="us-east-1",
                        config=no_retries(s3={"addressing_style": "path"}))


@contextlib.asynccontextmanager
async def _world(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Tenant t (bucket "vict": a plain object, an SSE-KMS one, a second version, an
    upload) and tenant u (bucket "mine" and an upload there), each with a boto3 client."""
    base = sim_config(tmp_path, 0)
    cfg = dataclasses.replace(base, gateway=dataclasses.replace(
        base.gateway, virtual_host_domain=DOMAIN))
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes)), tenant="t") as c:
        kt = await c.tenants.create_key("t")
        await c.tenants.create("u")
        ku = await c.tenants.create_key("u")
        async with served_s3(c, cfg, kt.access_key, kt.secret_key) as s3t:
            endpoint = s3t.meta.endpoint_url
            s3u = _client(endpoint, ku.access_key, ku.secret_key)

            def setup() -> dict[str, Any]:
                s3t.create_bucket(Bucket="vict")
                s3t.put_bucket_versioning(Bucket="vict",
                                          VersioningConfiguration={"Status": "Enabled"})
                v1 = s3t.put_object(Bucket="vict", Key="obj", Body=SECRET)["VersionId"]
                s3t.put_object(Bucket="vict", Key="obj", Body=SECRET + b"2")
                arn = s3t.put_object(Bucket="vict", Key="kms", Body=SECRET,
                                     ServerSideEncryption="aws:kms")["SSEKMSKeyId"]
                up = s3t.create_multipart_upload(Bucket="vict", Key="mp")["UploadId"]
                s3u.create_bucket(Bucket="mine")
                mine_up = s3u.create_multipart_upload(Bucket="mine", Key="m")["UploadId"]
                return {"v1": v1, "up": up, "mine_up": mine_up, "arn": arn}
            w = await asyncio.to_thread(setup)
            yield {**w, "c": c, "t": s3t, "u": s3u, "endpoint": endpoint, "ku": ku}


def _denied(fn: Any) -> None:
    """`fn()` is refused 403 AccessDenied (HEAD: status only)."""
    with pytest.raises(ClientError) as ei:
        fn()
    r = ei.value.response
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 403, r
    assert r["Error"]["Code"] in ("AccessDenied", "403"), r


def _boto_probes(w: dict[str, Any]) -> dict[str, Any]:
    u, v1 = w["u"], w["v1"]
    mine_up = w["mine_up"]
    src = {"Bucket": "vict", "Key": "obj"}
    return {
        "GetObjectVersion": lambda: u.get_object(Bucket="vict", Key="obj", VersionId=v1),
        "HeadObjectVersion": lambda: u.head_object(Bucket="vict", Key="obj", VersionId=v1),
        "ListObjectVersions": lambda: u.list_object_versions(Bucket="vict"),
        "GetObjectAttributes": lambda: u.get_object_attributes(
            Bucket="vict", Key="obj", ObjectAttributes=["ETag", "ObjectSize", "Checksum"]),
        "GetObjectAcl": lambda: u.get_object_acl(Bucket="vict", Key="obj"),
        "PutObjectAcl": lambda: u.put_object_acl(Bucket="vict", Key="obj",
                                                 ACL="public-read"),
        "GetBucketAcl": lambda: u.get_bucket_acl(Bucket="vict"),
        "PutBucketAcl": lambda: u.put_bucket_acl(Bucket="vict", ACL="public-read"),
        "RestoreObject": lambda: u.restore_object(Bucket="vict", Key="obj",
                                                  RestoreRequest={"Days": 1}),
        "SelectObjectContent": lambda: u.select_object_content(
            Bucket="vict", Key="obj", Expression="select * from s3object",
            ExpressionType="SQL", InputSerialization={"CSV": {}},
            OutputSerialization={"CSV": {}}),
        "GetObjectRetention": lambda: u.get_object_retention(Bucket="vict", Key="obj"),
        "GetObjectLegalHold": lambda: u.get_object_legal_hold(Bucket="vict", Key="obj"),
        "CopyFromVict": lambda: u.copy_object(Bucket="mine", Key="c", CopySource=src),
        "CopyFromVictVersion": lambda: u.copy_object(
            Bucket="mine", Key="c", CopySource={**src, "VersionId": v1}),
        "CopyFromVictKms": lambda: u.copy_object(
            Bucket="mine", Key="c", CopySource={"Bucket": "vict", "Key": "kms"}),
        "CopyFromVictSlash": lambda: u.copy_object(Bucket="mine", Key="c",
                                                   CopySource="/vict/obj"),
        "UploadPartCopy": lambda: u.upload_part_copy(
            Bucket="mine", Key="m", UploadId=mine_up, PartNumber=1, CopySource=src),
        "UploadPartCopyRange": lambda: u.upload_part_copy(
            Bucket="mine", Key="m", UploadId=mine_up, PartNumber=1, CopySource=src,
            CopySourceRange="bytes=0-9"),
        "ListParts": lambda: u.list_parts(Bucket="vict", Key="mp", UploadId=w["up"]),
        "UploadPartIntoVict": lambda: u.upload_part(Bucket="vict", Key="mp",
                                                    UploadId=w["up"], PartNumber=1, Body=b"x"),
        "CompleteVictUpload": lambda: u.complete_multipart_upload(
            Bucket="vict", Key="mp", UploadId=w["up"], MultipartUpload={"Parts": []}),
        "ExpectedOwnerSpoof": lambda: u.get_object(Bucket="vict", Key="obj",
                                                   ExpectedBucketOwner="u"),
    }


PROBES = list(_boto_probes({"u": None, "v1": "", "mine_up": "", "up": ""}))


async def test_forged_boto3_requests_are_access_denied(tmp_path: Path) -> None:
    async with _world(tmp_path) as w:
        def run() -> dict[str, str]:
            wrong = {}
            for name, fn in _boto_probes(w).items():
                try:
                    _denied(fn)
                except (AssertionError, pytest.fail.Exception) as exc:
                    wrong[name] = str(exc)[:120]
            return wrong
        assert await asyncio.to_thread(run) == {}
        # nothing landed in u's bucket
        got = await asyncio.to_thread(w["u"].list_objects_v2, Bucket="mine")
        assert got.get("KeyCount", 0) == 0
        parts = await asyncio.to_thread(w["u"].list_parts, Bucket="mine", Key="m",
                                        UploadId=w["mine_up"])
        assert parts.get("Parts", []) == []


def _raw(w: dict[str, Any], method: str, host: str, path: str, body: bytes = b"",
         extra: dict[str, str] | None = None) -> requests.Response:
    """A request signed by u's key for `host` (virtual-host style names the bucket there),
    sent to the gateway's loopback address."""
    port = w["endpoint"].rsplit(":", 1)[1]
    url = f"http://{host}:{port}{path}"
    hdrs = sign_headers(method, url, extra or {}, body, w["ku"].access_key,
                        w["ku"].secret_key)
    return requests.request(method, f"{w['endpoint']}{path}", headers=hdrs, data=body,
                            timeout=30)


async def test_forged_virtual_host_presigned_and_post_requests_are_access_denied(
        tmp_path: Path) -> None:
    async with _world(tmp_path) as w:
        def run() -> list[tuple[str, int, bytes]]:
            v = f"vict.{DOMAIN}"
            got = []
            for method, host, path, body, extra in (
                    ("GET", v, "/obj", b"", None),
                    ("HEAD", v, "/obj", b"", None),
                    ("GET", v, "/?list-type=2", b"", None),
                    ("GET", v, "/?versions", b"", None),
                    ("GET", v, "/?uploads", b"", None),
                    ("GET", v, "/obj?attributes", b"", {"x-amz-object-attributes": "ETag"}),
                    ("GET", v, "/obj?acl", b"", None),
                    ("GET", v, "/?policy", b"", None),
                    ("PUT", v, "/new", b"x", None),
                    ("POST", v, "/obj?restore", b"<RestoreRequest><Days>1</Days>"
                     b"</RestoreRequest>", None),
                    ("PUT", f"mine.{DOMAIN}", "/c", b"", {"x-amz-copy-source": "/vict/obj"}),
                    ("PUT", f"mine.{DOMAIN}", "/c", b"", {"x-amz-copy-source": "vict/kms"}),
                    ("PUT", f"mine.{DOMAIN}", "/c", b"",
                     {"x-amz-copy-source": "%76ict/%6Fbj"})):
                r = _raw(w, method, host, path, body, extra)
                got.append((f"{method} {host}{path}", r.status_code, r.content))
            u = w["u"]
            for op, params, http in (("get_object", {"Key": "obj"}, "GET"),
                                     ("get_object", {"Key": "obj", "VersionId": w["v1"]}, "GET"),
                                     ("list_object_versions", {}, "GET"),
                                     ("put_object", {"Key": "p"}, "PUT")):
                url = u.generate_presigned_url(op, Params={"Bucket": "vict", **params})
                r = requests.request(http, url, data=b"x" if http == "PUT" else None,
                                     timeout=30)
                got.append((f"presigned {op}", r.status_code, r.content))
            post = u.generate_presigned_post("vict", "posted")
            r = requests.post(post["url"], data=post["fields"],
                              files={"file": ("f", b"forged")}, timeout=30)
            got.append(("POST form", r.status_code, r.content))
            return got
        answers = await asyncio.to_thread(run)
        wrong = [(what, status, body[:200]) for what, status, body in answers
                 if status != 403 or SECRET[:16] in body
                 or (body and b"<Code>AccessDenied</Code>" not in body)]
        assert wrong == [], wrong
        versions = await asyncio.to_thread(w["t"].list_object_versions, Bucket="vict")
        assert sorted(v["Key"] for v in versions["Versions"]) == ["kms", "obj", "obj"]


async def test_a_read_grant_does_not_open_an_sse_kms_object(tmp_path: Path) -> None:
    """t grants u GetObject on its bucket: u reads the SSE-S3 object; the SSE-KMS one is
    encrypted under t's KMS key, which no policy of this service grants to another
    account (AWS: the AWS managed key aws/s3 cannot be used across accounts; a customer
    managed key only through its key policy): 403 AccessDenied, no bytes."""
    async with _world(tmp_path) as w:
        def run() -> None:
            w["t"].put_bucket_policy(Bucket="vict", Policy=json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"AWS": "u"}, "Action": "s3:GetObject",
                    "Resource": "arn:aws:s3:::vict/*"}]}))
            got = w["u"].get_object(Bucket="vict", Key="obj")["Body"].read()
            assert got == SECRET + b"2"
            u, src = w["u"], {"Bucket": "vict", "Key": "kms"}
            for fn in (lambda: u.get_object(Bucket="vict", Key="kms")["Body"].read(),
                       lambda: u.copy_object(Bucket="mine", Key="c", CopySource=src),
                       lambda: u.upload_part_copy(Bucket="mine", Key="m",
                                                  UploadId=w["mine_up"], PartNumber=1,
                                                  CopySource=src)):
                _denied(fn)
            assert u.head_object(Bucket="vict", Key="kms")["ContentLength"] == len(SECRET)
            own = w["t"].get_object(Bucket="vict", Key="kms")["Body"].read()
            assert own == SECRET
        await asyncio.to_thread(run)


def _spelled(text: str, picks: list[bool]) -> str:
    """`text` with the characters `picks` chooses percent-encoded (either case of hex)."""
    return "".join(f"%{ord(ch):02{'X' if i % 2 else 'x'}}" if pick else ch
                   for i, (ch, pick) in enumerate(zip(text, picks, strict=True)))


async def test_no_spelling_of_a_foreign_copy_source_copies(tmp_path: Path) -> None:
    """Property: however u spells t's object as x-amz-copy-source (percent-encoded
    characters, a leading slash, a version id, CopyObject or UploadPartCopy), the answer
    is a 4xx without t's bytes, and nothing lands in u's bucket or upload."""
    async with _world(tmp_path) as w:
        def run() -> None:
            @settings(max_examples=40)
            @given(picks=st.lists(st.booleans(), min_size=8, max_size=8),
                   slash=st.booleans(), version=st.sampled_from(["", "v1", "null", "bad"]),
                   key=st.sampled_from(["obj", "kms"]), part=st.booleans())
            def probe(picks: list[bool], slash: bool, version: str, key: str,
                      part: bool) -> None:
                name = f"vict/{key}"
                src = ("/" if slash else "") + _spelled(name, (picks * 2)[:len(name)])
                if version:
                    src += f"?versionId={w['v1'] if version == 'v1' else version}"
                path = (f"/m?partNumber=1&uploadId={w['mine_up']}" if part else "/c")
                r = _raw(w, "PUT", f"mine.{DOMAIN}", path, b"", {"x-amz-copy-source": src})
                assert 400 <= r.status_code < 500, (src, r.status_code, r.content[:200])
                assert SECRET[:16] not in r.content
            probe()
            assert w["u"].list_objects_v2(Bucket="mine").get("KeyCount", 0) == 0
            assert w["u"].list_parts(Bucket="mine", Key="m",
                                     UploadId=w["mine_up"]).get("Parts", []) == []
        await asyncio.to_thread(run)


async def test_another_tenants_kms_key_is_access_denied(tmp_path: Path) -> None:
    """u names t's KMS key by ARN (the account part is the tenant: stable, t's own) for
    its own writes: 403 AccessDenied whether the key exists or not (no existence oracle),
    as AWS answers a key of another account the caller may not use; a key id unknown in
    u's own account is 400 KMS.NotFoundException. A bucket default naming t's key is
    accepted (AWS does not check it either) and refused when a PUT would use it. Nothing
    is written."""
    async with _world(tmp_path) as w:
        def run() -> None:
            u, arn = w["u"], w["arn"]
            assert arn.startswith("arn:aws:kms:us-east-1:t:key/"), arn
            ghost = arn.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
            kms = {"ServerSideEncryption": "aws:kms"}
            u.put_object(Bucket="mine", Key="src", Body=b"u's own")
            src = {"Bucket": "mine", "Key": "src"}
            for key in (arn, ghost):
                _denied(lambda k=key: u.put_object(Bucket="mine", Key="k", Body=b"x", **kms,
                                                   SSEKMSKeyId=k))
                _denied(lambda k=key: u.create_multipart_upload(Bucket="mine", Key="k", **kms,
                                                                SSEKMSKeyId=k))
                _denied(lambda k=key: u.copy_object(Bucket="mine", Key="k", **kms,
                                                    SSEKMSKeyId=k, CopySource=src))
            with pytest.raises(ClientError) as ei:
                u.put_object(Bucket="mine", Key="k", Body=b"x", **kms,
                             SSEKMSKeyId=ghost.replace(":t:", ":u:"))
            r = ei.value.response
            assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == (
                400, "KMS.NotFoundException"), r
            u.put_bucket_encryption(Bucket="mine", ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {
                    "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": arn}}]})
            _denied(lambda: u.put_object(Bucket="mine", Key="k", Body=b"x"))
            listed = u.list_objects_v2(Bucket="mine")["Contents"]
            assert [o["Key"] for o in listed] == ["src"]
            ups = u.list_multipart_uploads(Bucket="mine").get("Uploads", [])
            assert [x["Key"] for x in ups] == ["m"]
        await asyncio.to_thread(run)
