"""Named KMS keys (SSE-KMS) and SSE-C error codes, with boto3 and the CLI on a real cluster.

Every test uses tenants of its own on the shared session cluster.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ops.admincli import CliError, admin_request
from ops.botoconfig import no_retries
from storage.crypto import keys
from storage.crypto.aead import KEY_BYTES
from storage.datakeys import identity
from storage.errors import IntegrityError
from storage.keyspace import kms_key_key, tenant_key
from storage.kms import DEFAULT_ALIAS, KmsKey
from storage.records import Tenant
from tests.integration.cluster import LocalCluster

REGION = "us-east-1"


def tessera(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args],
                          env={**os.environ, **cluster.env}, capture_output=True, text=True,
                          timeout=60)


def new_tenant(cluster: LocalCluster, prefix: str) -> tuple[str, Any]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin_request("POST", "/tenants", {"name": name}, env=cluster.env)
    cred = admin_request("POST", "/keys", {"tenant": name}, env=cluster.env)
    s3 = boto3.client("s3", endpoint_url=cluster.endpoint, region_name=REGION,
                      aws_access_key_id=cred["access_key_id"],
                      aws_secret_access_key=cred["secret_access_key"],
                      config=no_retries())
    s3.create_bucket(Bucket=name)
    return name, s3


def create_key(cluster: LocalCluster, tenant: str, name: str) -> dict[str, Any]:
    """What `tessera kms create NAME --tenant T` does (the CLI itself: the first test)."""
    return admin_request("POST", f"/tenants/{tenant}/kms-keys", {"aliases": [name]},
                         env=cluster.env)


def list_keys(cluster: LocalCluster, tenant: str) -> list[dict[str, Any]]:
    return admin_request("GET", f"/tenants/{tenant}/kms-keys", env=cluster.env)["keys"]


def error(fn: Any, **kw: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as ei:
        fn(**kw)
    e = ei.value.response
    return (e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"],
            e["Error"].get("Message", ""))


def unwrapped_dek(cluster: LocalCluster, bucket: str, key: str) -> tuple[bytes, Any]:
    """The version's DEK with only the tenant-KEK layer removed, as a process holding the root
    key and the metadata would see it (no KMS key): for SSE-KMS it is still wrapped."""
    v = cluster.manifest(bucket, key)
    t = Tenant.decode(cluster.db_get(tenant_key(v.tenant)) or b"")
    root = keys.FileRootKey(cluster.data / "secrets" / "root.key")
    kek = keys.open_kek(root, v.tenant, v.kek_version, t.keks[v.kek_version])
    return keys.unwrap_dek(kek, v.tenant, identity(v), v.dek), v


def test_cli_creates_and_lists_keys_with_aliases_ids_and_arns(cluster: LocalCluster) -> None:
    tenant, _ = new_tenant(cluster, "kmscli")
    kid = str(uuid.uuid4())
    r = tessera(cluster, "kms", "create", "orders", "--tenant", tenant, "--alias",
                "alias/billing", "--id", kid, "--json")
    assert r.returncode == 0, r.stderr
    k = json.loads(r.stdout)
    assert k["key_id"] == kid and k["aliases"] == ["alias/orders", "alias/billing"]
    assert k["arn"] == f"arn:aws:kms:{REGION}:{tenant}:key/{kid}"
    other = create_key(cluster, tenant, "logs")
    assert uuid.UUID(other["key_id"]).version == 4
    r = tessera(cluster, "kms", "list", "--tenant", tenant)
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "ID", "ALIASES"] and len(rows) == 2
    assert kid in rows[0] and "alias/orders,alias/billing" in rows[0] and k["arn"] in rows[0]
    assert [x["key_id"] for x in list_keys(cluster, tenant)] == [kid, other["key_id"]]
    r = tessera(cluster, "kms", "create", "billing", "--tenant", tenant)
    assert r.returncode == 1 and "alias/billing already exists" in r.stderr, r.stderr
    # Refusals: a taken id, a malformed id, the reserved aws/ aliases, no such tenant.
    path = f"/tenants/{tenant}/kms-keys"
    for body, msg in (({"aliases": ["x"], "key_id": kid}, "already exists"),
                      ({"aliases": ["x"], "key_id": "not-a-uuid"}, "UUID"),
                      ({"aliases": ["aws/s3"]}, "reserved"), ({"aliases": "x"}, "list")):
        with pytest.raises(CliError, match=msg):
            admin_request("POST", path, body, env=cluster.env)
    with pytest.raises(CliError, match="NoSuchTenant"):
        admin_request("GET", "/tenants/no-such-tenant/kms-keys", env=cluster.env)
    assert len(list_keys(cluster, tenant)) == 2


def test_every_key_name_form_encrypts_under_that_key(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsput")
    k = create_key(cluster, tenant, "app")
    k2 = create_key(cluster, tenant, "other")
    arn = k["arn"]
    names = [k["key_id"], arn, "alias/app", f"arn:aws:kms:{REGION}:{tenant}:alias/app"]
    for i, name in enumerate(names):
        body = os.urandom(100 + i * 50_000)  # inline and erasure-coded objects
        r = s3.put_object(Bucket=tenant, Key=f"o{i}", Body=body, ServerSideEncryption="aws:kms",
                          SSEKMSKeyId=name)
        assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"] == arn
        h = s3.head_object(Bucket=tenant, Key=f"o{i}")
        assert h["ServerSideEncryption"] == "aws:kms" and h["SSEKMSKeyId"] == arn
        g = s3.get_object(Bucket=tenant, Key=f"o{i}", Range="bytes=10-99")
        assert g["SSEKMSKeyId"] == arn and g["Body"].read() == body[10:100]
        # The version records its key, and its data key is wrapped by it under the KEK layer.
        inner, v = unwrapped_dek(cluster, tenant, f"o{i}")
        assert v.sse["kms_key"] == k["key_id"] and len(inner) > KEY_BYTES
        rec = KmsKey.decode(cluster.db_get(kms_key_key(tenant, k["key_id"])) or b"")
        t = Tenant.decode(cluster.db_get(tenant_key(tenant)) or b"")
        root = keys.FileRootKey(cluster.data / "secrets" / "root.key")
        kek = keys.open_kek(root, tenant, rec.kek_version, t.keks[rec.kek_version])
        material = keys.open_kms_key(kek, tenant, rec.key_id, rec.kek_version, rec.material)
        assert len(keys.unwrap_kms(material, tenant, rec.key_id, identity(v),
                                   inner)) == KEY_BYTES
    r = s3.put_object(Bucket=tenant, Key="two", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/other")
    assert r["SSEKMSKeyId"] == k2["arn"]


def test_unknown_malformed_and_foreign_keys_are_refused(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsbad")
    other, _ = new_tenant(cluster, "kmsoth")
    theirs = create_key(cluster, other, "theirs")
    put = dict(Bucket=tenant, Key="o", Body=b"x", ServerSideEncryption="aws:kms")
    missing = str(uuid.uuid4())
    cases = {
        "testkey-1": "Invalid keyId testkey-1",
        missing: f"Key 'arn:aws:kms:{REGION}:{tenant}:key/{missing}' does not exist",
        "alias/theirs": f"Alias arn:aws:kms:{REGION}:{tenant}:alias/theirs is not found.",
        theirs["key_id"]: f"Key 'arn:aws:kms:{REGION}:{tenant}:key/{theirs['key_id']}' "
                          "does not exist",
    }
    for name, message in cases.items():
        assert error(s3.put_object, **put, SSEKMSKeyId=name) == (
            400, "KMS.NotFoundException", message)
    status, code, _ = error(s3.put_object, **put, SSEKMSKeyId=theirs["arn"])
    assert (status, code) == (403, "AccessDenied")
    # Looked up for multipart and copy too; nothing was written.
    status, code, _ = error(s3.create_multipart_upload, Bucket=tenant, Key="m",
                            ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/nope")
    assert (status, code) == (400, "KMS.NotFoundException")
    assert "Contents" not in s3.list_objects_v2(Bucket=tenant)
    # A key id without aws:kms is refused as AWS does.
    status, code, _ = error(s3.put_object, Bucket=tenant, Key="o", Body=b"x",
                            SSEKMSKeyId=theirs["arn"])
    assert (status, code) == (400, "InvalidArgument")


def test_default_key_is_made_once_and_used_without_a_key_id(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsdef")
    r1 = s3.put_object(Bucket=tenant, Key="a", Body=b"a", ServerSideEncryption="aws:kms")
    r2 = s3.put_object(Bucket=tenant, Key="b", Body=b"b", ServerSideEncryption="aws:kms")
    (k,) = list_keys(cluster, tenant)
    assert k["aliases"] == [f"alias/{DEFAULT_ALIAS}"] and k["managed"]
    assert r1["SSEKMSKeyId"] == r2["SSEKMSKeyId"] == k["arn"]
    r3 = s3.put_object(Bucket=tenant, Key="c", Body=b"c", ServerSideEncryption="aws:kms",
                       SSEKMSKeyId="alias/aws/s3")
    assert r3["SSEKMSKeyId"] == k["arn"]
    assert s3.get_object(Bucket=tenant, Key="b")["Body"].read() == b"b"


def test_copy_and_multipart_carry_the_key(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsmp")
    a = create_key(cluster, tenant, "a")
    b = create_key(cluster, tenant, "b")
    s3.put_object(Bucket=tenant, Key="src", Body=b"source", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId="alias/a")
    r = s3.copy_object(Bucket=tenant, Key="dst", CopySource={"Bucket": tenant, "Key": "src"},
                       ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/b")
    assert r["SSEKMSKeyId"] == b["arn"]
    g = s3.get_object(Bucket=tenant, Key="dst")
    assert g["SSEKMSKeyId"] == b["arn"] and g["Body"].read() == b"source"
    assert cluster.manifest(tenant, "dst").sse["kms_key"] == b["key_id"]
    up = s3.create_multipart_upload(Bucket=tenant, Key="mp", ServerSideEncryption="aws:kms",
                                    SSEKMSKeyId=a["key_id"])
    assert up["SSEKMSKeyId"] == a["arn"]
    part1 = os.urandom(5 * 1024 * 1024)
    p1 = s3.upload_part(Bucket=tenant, Key="mp", UploadId=up["UploadId"], PartNumber=1,
                        Body=part1)
    assert p1["SSEKMSKeyId"] == a["arn"]
    p2 = s3.upload_part_copy(Bucket=tenant, Key="mp", UploadId=up["UploadId"], PartNumber=2,
                             CopySource={"Bucket": tenant, "Key": "src"})
    assert p2["SSEKMSKeyId"] == a["arn"]
    done = s3.complete_multipart_upload(
        Bucket=tenant, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": p1["ETag"]},
            {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]})
    assert done["SSEKMSKeyId"] == a["arn"]
    g = s3.get_object(Bucket=tenant, Key="mp")
    assert g["SSEKMSKeyId"] == a["arn"] and g["Body"].read() == part1 + b"source"
    inner, v = unwrapped_dek(cluster, tenant, "mp")
    assert v.sse["kms_key"] == a["key_id"] and len(inner) > KEY_BYTES


def test_bucket_default_kms_key_and_bucket_key(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsbkt")
    # Unconfigured: every bucket has SSE-S3 by default, as AWS answers since January 2023.
    rule = s3.get_bucket_encryption(Bucket=tenant)["ServerSideEncryptionConfiguration"]
    assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    k = create_key(cluster, tenant, "bkt")
    s3.put_bucket_encryption(Bucket=tenant, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                               "KMSMasterKeyID": "alias/bkt"},
        "BucketKeyEnabled": True}]})
    got = s3.get_bucket_encryption(Bucket=tenant)["ServerSideEncryptionConfiguration"]
    assert got["Rules"][0]["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == "alias/bkt"
    assert got["Rules"][0]["BucketKeyEnabled"] is True
    r = s3.put_object(Bucket=tenant, Key="p", Body=b"put")
    assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"] == k["arn"]
    assert r["BucketKeyEnabled"] is True
    h = s3.head_object(Bucket=tenant, Key="p")
    assert h["SSEKMSKeyId"] == k["arn"] and h["BucketKeyEnabled"] is True
    # The data key is wrapped by the bucket key derived from the KMS key, not by the key.
    inner, v = unwrapped_dek(cluster, tenant, "p")
    rec = KmsKey.decode(cluster.db_get(kms_key_key(tenant, k["key_id"])) or b"")
    t = Tenant.decode(cluster.db_get(tenant_key(tenant)) or b"")
    root = keys.FileRootKey(cluster.data / "secrets" / "root.key")
    kek = keys.open_kek(root, tenant, rec.kek_version, t.keks[rec.kek_version])
    material = keys.open_kms_key(kek, tenant, rec.key_id, rec.kek_version, rec.material)
    bkey = keys.bucket_key(material, tenant, rec.key_id, tenant)
    ident = identity(v)
    assert len(keys.unwrap_kms(bkey, tenant, rec.key_id, ident, inner)) == KEY_BYTES
    r = s3.copy_object(Bucket=tenant, Key="c", CopySource={"Bucket": tenant, "Key": "p"})
    assert r["SSEKMSKeyId"] == k["arn"] and r["BucketKeyEnabled"] is True
    up = s3.create_multipart_upload(Bucket=tenant, Key="m")
    assert up["SSEKMSKeyId"] == k["arn"] and up["BucketKeyEnabled"] is True
    p = s3.upload_part(Bucket=tenant, Key="m", UploadId=up["UploadId"], PartNumber=1, Body=b"m")
    done = s3.complete_multipart_upload(Bucket=tenant, Key="m", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": [
                                            {"PartNumber": 1, "ETag": p["ETag"]}]})
    assert done["SSEKMSKeyId"] == k["arn"] and done["BucketKeyEnabled"] is True
    for key, want in (("p", b"put"), ("c", b"put"), ("m", b"m")):
        assert s3.get_object(Bucket=tenant, Key=key)["Body"].read() == want
    # An unknown default key fails the writes that would use it, as AWS does.
    s3.put_bucket_encryption(Bucket=tenant, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                               "KMSMasterKeyID": "alias/gone"}}]})
    status, code, _ = error(s3.put_object, Bucket=tenant, Key="x", Body=b"x")
    assert (status, code) == (400, "KMS.NotFoundException")


def test_shredding_the_tenant_destroys_its_kms_objects(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsshr")
    create_key(cluster, tenant, "doomed")
    s3.put_object(Bucket=tenant, Key="o", Body=b"secret", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId="alias/doomed")
    admin_request("POST", f"/tenants/{tenant}/shred", {"confirm": tenant, "wait_s": 0},
                  env=cluster.env)
    t = Tenant.decode(cluster.db_get(tenant_key(tenant)) or b"")
    assert t.keks == {}  # the KEK that wraps the KMS key material is gone
    with pytest.raises(CliError, match="TenantShredded"):
        create_key(cluster, tenant, "late")


def test_encryption_context_is_bound_into_the_wrapping_and_echoed(cluster: LocalCluster,
                                                                  ) -> None:
    tenant, s3 = new_tenant(cluster, "kmsctx")
    k = create_key(cluster, tenant, "ctx")
    ctx = base64.b64encode(json.dumps({"project": "x", "a": "1"}).encode()).decode()
    r = s3.put_object(Bucket=tenant, Key="o", Body=b"ctx", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/ctx", SSEKMSEncryptionContext=ctx)
    assert r["SSEKMSEncryptionContext"] == ctx and r["SSEKMSKeyId"] == k["arn"]
    assert s3.get_object(Bucket=tenant, Key="o")["Body"].read() == b"ctx"
    inner, v = unwrapped_dek(cluster, tenant, "o")
    rec = KmsKey.decode(cluster.db_get(kms_key_key(tenant, k["key_id"])) or b"")
    t = Tenant.decode(cluster.db_get(tenant_key(tenant)) or b"")
    root = keys.FileRootKey(cluster.data / "secrets" / "root.key")
    kek = keys.open_kek(root, tenant, rec.kek_version, t.keks[rec.kek_version])
    material = keys.open_kms_key(kek, tenant, rec.key_id, rec.kek_version, rec.material)
    ident = identity(v)
    assert len(keys.unwrap_kms(material, tenant, rec.key_id, ident, inner,
                               '{"a":"1","project":"x"}')) == KEY_BYTES
    with pytest.raises(IntegrityError):  # bound to the context: without it, no data key
        keys.unwrap_kms(material, tenant, rec.key_id, ident, inner)
    up = s3.create_multipart_upload(Bucket=tenant, Key="m", ServerSideEncryption="aws:kms",
                                    SSEKMSEncryptionContext=ctx)
    assert up["SSEKMSEncryptionContext"] == ctx
    for bad, alg in ((base64.b64encode(b"[1]").decode(), "aws:kms"), ("%%%", "aws:kms"),
                     (ctx, "AES256")):
        status, code, _ = error(s3.put_object, Bucket=tenant, Key="b", Body=b"x",
                                ServerSideEncryption=alg, SSEKMSEncryptionContext=bad)
        assert (status, code) == (400, "InvalidArgument")


def test_rotation_rewraps_kms_keys_and_delete_forgets_them(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsrot")
    k = create_key(cluster, tenant, "rot")
    s3.put_object(Bucket=tenant, Key="o", Body=b"before", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId="alias/rot")
    admin_request("POST", f"/tenants/{tenant}/rotate-key", env=cluster.env)
    rec = KmsKey.decode(cluster.db_get(kms_key_key(tenant, k["key_id"])) or b"")
    assert rec.kek_version == 2  # the key material is now wrapped by the new KEK version
    assert s3.get_object(Bucket=tenant, Key="o")["Body"].read() == b"before"
    s3.put_object(Bucket=tenant, Key="n", Body=b"after", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId="alias/rot")
    assert s3.get_object(Bucket=tenant, Key="n")["Body"].read() == b"after"
    # Deleting a tenant deletes its keys and aliases: a new tenant of that name starts empty.
    name = f"kmsdel-{uuid.uuid4().hex[:8]}"
    admin_request("POST", "/tenants", {"name": name}, env=cluster.env)
    gone = create_key(cluster, name, "mine")
    admin_request("DELETE", f"/tenants/{name}", env=cluster.env)
    assert cluster.db_get(kms_key_key(name, gone["key_id"])) is None
    admin_request("POST", "/tenants", {"name": name, "reuse_name": True}, env=cluster.env)
    assert list_keys(cluster, name) == []
    assert create_key(cluster, name, "mine")["key_id"] != gone["key_id"]


def test_archive_transition_keeps_the_kms_layer(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsarc")
    k = create_key(cluster, tenant, "cold")
    s3.put_object(Bucket=tenant, Key="o", Body=os.urandom(300_000),
                  ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/cold")
    s3.put_bucket_lifecycle_configuration(Bucket=tenant, LifecycleConfiguration={"Rules": [
        {"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Transitions": [{"Date": time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime()),
                          "StorageClass": "GLACIER"}]}]})
    env = {**os.environ, "TESSERA_CONFIG": cluster.env["TESSERA_CONFIG"]}
    for _ in range(20):
        if s3.head_object(Bucket=tenant, Key="o").get("StorageClass") == "GLACIER":
            break
        out = subprocess.run([sys.executable, "-m", "ops.cli", "lifecycle", "run-once"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    h = s3.head_object(Bucket=tenant, Key="o")
    assert h["StorageClass"] == "GLACIER" and h["SSEKMSKeyId"] == k["arn"]
    # Re-encrypted for the archive under a fresh data key, wrapped by the KMS key again.
    inner, v = unwrapped_dek(cluster, tenant, "o")
    rec = KmsKey.decode(cluster.db_get(kms_key_key(tenant, k["key_id"])) or b"")
    t = Tenant.decode(cluster.db_get(tenant_key(tenant)) or b"")
    root = keys.FileRootKey(cluster.data / "secrets" / "root.key")
    kek = keys.open_kek(root, tenant, rec.kek_version, t.keks[rec.kek_version])
    material = keys.open_kms_key(kek, tenant, rec.key_id, rec.kek_version, rec.material)
    assert len(keys.unwrap_kms(material, tenant, rec.key_id, identity(v),
                               inner)) == KEY_BYTES


SSEC_A = base64.b64encode(b"A" * 32).decode()
SSEC_B = base64.b64encode(b"B" * 32).decode()


def ssec(key: str, prefix: str = "") -> dict[str, str]:
    md5 = base64.b64encode(hashlib.md5(base64.b64decode(key)).digest()).decode()
    return {f"{prefix}SSECustomerAlgorithm": "AES256", f"{prefix}SSECustomerKey": key,
            f"{prefix}SSECustomerKeyMD5": md5}


def test_sse_c_missing_and_wrong_key_codes_match_aws(cluster: LocalCluster) -> None:
    tenant, s3 = new_tenant(cluster, "kmsssec")
    s3.put_object(Bucket=tenant, Key="o", Body=b"c", **ssec(SSEC_A))
    # GET/HEAD: missing key 400 InvalidRequest, wrong key 403 AccessDenied (AWS's answers).
    assert error(s3.get_object, Bucket=tenant, Key="o")[:2] == (400, "InvalidRequest")
    assert error(s3.get_object, Bucket=tenant, Key="o", **ssec(SSEC_B))[:2] == (
        403, "AccessDenied")
    # x-amz-server-side-encryption on a GET is refused.
    plain = s3.put_object(Bucket=tenant, Key="p", Body=b"p")
    assert plain["ServerSideEncryption"] == "AES256"

    def add_sse(params: Any, **_: Any) -> None:
        params["headers"]["x-amz-server-side-encryption"] = "AES256"

    s3.meta.events.register("before-call.s3.GetObject", add_sse)
    try:
        assert error(s3.get_object, Bucket=tenant, Key="p")[:2] == (400, "InvalidArgument")
    finally:
        s3.meta.events.unregister("before-call.s3.GetObject", add_sse)
    # Multipart: parts and completion repeat the upload's key; missing or different is 400.
    up = s3.create_multipart_upload(Bucket=tenant, Key="m", **ssec(SSEC_A))
    uid = up["UploadId"]
    part = dict(Bucket=tenant, Key="m", UploadId=uid, PartNumber=1, Body=b"part")
    status, code, msg = error(s3.upload_part, **part, **ssec(SSEC_B))
    assert (status, code) == (400, "InvalidRequest") and "did not match" in msg
    status, code, msg = error(s3.upload_part, **part)
    assert (status, code) == (400, "InvalidRequest") and "must include" in msg
    status, code, _ = error(s3.upload_part_copy, Bucket=tenant, Key="m", UploadId=uid,
                            PartNumber=1, CopySource={"Bucket": tenant, "Key": "p"},
                            **ssec(SSEC_B))
    assert (status, code) == (400, "InvalidRequest")
    p = s3.upload_part(**part, **ssec(SSEC_A))
    parts = {"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]}
    complete = dict(Bucket=tenant, Key="m", UploadId=uid, MultipartUpload=parts)
    # Completion: a different key is 400; a missing one is fine for an upload made without
    # a checksum algorithm (AWS asks for the key at completion only with one).
    assert error(s3.complete_multipart_upload, **complete, **ssec(SSEC_B))[:2] == (
        400, "InvalidRequest")
    s3.complete_multipart_upload(**complete)
    assert s3.get_object(Bucket=tenant, Key="m", **ssec(SSEC_A))["Body"].read() == b"part"
