"""Data at rest: no plaintext on disk, shard swaps detected, SSE headers, rotation, shredding."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ops.admincli import admin_request
from ops.botoconfig import no_retries
from storage.keyspace import tenant_key
from storage.records import Tenant
from tests.held_shards import HeldShard
from tests.integration.cluster import LocalCluster, files_holding, wait_for

MARKER = b"KNOWN-PLAINTEXT-7f3a9c-"


def new_tenant(cluster: LocalCluster, prefix: str) -> tuple[str, Any, dict[str, str]]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin_request("POST", "/tenants", {"name": name}, env=cluster.env)
    cred = admin_request("POST", "/keys", {"tenant": name}, env=cluster.env)
    s3 = boto3.client("s3", endpoint_url=cluster.endpoint,
                      aws_access_key_id=cred["access_key_id"],
                      aws_secret_access_key=cred["secret_access_key"], region_name="us-east-1",
                      config=no_retries())
    return name, s3, cred


def body_with_marker(size: int) -> bytes:
    unit = MARKER + b"%08d|"
    out = b"".join(unit % i for i in range(size // len(unit) + 1))
    return out[:size]


# --- plaintext and secrets on disk ---------------------------------------------------------


def test_known_plaintext_and_secrets_appear_nowhere(cluster: LocalCluster,
                                                    tmp_path: Path) -> None:
    name, s3, cred = new_tenant(cluster, "plain")
    bucket = name
    s3.create_bucket(Bucket=bucket)
    big, small = body_with_marker(3 * 1024 * 1024 + 17), MARKER + b"small object"
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    ckey = os.urandom(32)
    s3.put_object(Bucket=bucket, Key="ssec", Body=MARKER + b"customer", SSECustomerKey=ckey,
                  SSECustomerAlgorithm="AES256")
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big
    # A failed request with the secret in it must not leak it to the logs either.
    bad = boto3.client("s3", endpoint_url=cluster.endpoint, aws_access_key_id="NOPE",
                       aws_secret_access_key=cred["secret_access_key"], region_name="us-east-1",
                       config=no_retries())
    with pytest.raises(ClientError):
        bad.list_objects_v2(Bucket=bucket)
    needles = [MARKER, cred["secret_access_key"].encode(), ckey,
               base64.b64encode(ckey), cluster.env["TESSERA_ADMIN_SECRET_KEY"].encode()]
    hits = [h for h in files_holding(cluster.data, needles)
            if not h.startswith(str(cluster.data / "tessera.env"))]
    assert hits == []
    # A node's data directory copied elsewhere: no plaintext and no key material in it.
    node_dir = cluster.data / "nodes" / "n1"
    copy = tmp_path / "stolen"
    shutil.copytree(node_dir, copy)
    root_key = (cluster.data / "secrets" / "root.key").read_bytes()
    assert files_holding(copy, [MARKER, root_key, ckey]) == []
    assert not list(copy.rglob("*.key")) and not list(copy.rglob("*.db"))


# --- shard swaps ---------------------------------------------------------------------------


def _shard_path(cluster: LocalCluster, node: str, stripe: bytes, index: int) -> HeldShard:
    """The shard where the node reads it (a file, or a packed record), used like a Path."""
    return cluster.shard(node, f"{stripe.hex()}.{index}")


def test_swapped_shard_files_are_detected_and_served_from_parity(
        fresh_cluster: LocalCluster) -> None:
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="swap")
    size = 2 * 1024 * 1024 + 5
    bodies = {"a": body_with_marker(size), "b": body_with_marker(size)[::-1]}
    for k, b in bodies.items():
        s3.put_object(Bucket="swap", Key=k, Body=b)
    pa, pb = c.manifest("swap", "a").parts[0], c.manifest("swap", "b").parts[0]
    # The same shard index of both objects, on whatever nodes hold them: swap the files.
    ia, ib = 0, 0
    fa = _shard_path(c, pa.nodes[ia], pa.stripe_id, ia)  # type: ignore[arg-type]
    fb = _shard_path(c, pb.nodes[ib], pb.stripe_id, ib)  # type: ignore[arg-type]
    da, db = fa.read_bytes(), fb.read_bytes()
    fa.write_bytes(db)
    fb.write_bytes(da)
    for k, b in bodies.items():
        got = s3.get_object(Bucket="swap", Key=k)["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(b).digest(), k
    # Two segments of one shard swapped inside the file: also detected, also served right.
    pc = c.manifest("swap", "a").parts[0]
    idx = 1
    fc = _shard_path(c, pc.nodes[idx], pc.stripe_id, idx)  # type: ignore[arg-type]
    if fc.exists():
        data = bytearray(fc.read_bytes())
        n = len(data)
        seg = (n - 64) // 3  # approximate: move bytes between the first and second block
        a0, b0 = n - 2 * seg, n - seg
        data[a0:a0 + 64], data[b0:b0 + 64] = data[b0:b0 + 64], data[a0:a0 + 64]
        fc.write_bytes(bytes(data))
        got = s3.get_object(Bucket="swap", Key="a")["Body"].read()
        assert got == bodies["a"]


# --- SSE headers ---------------------------------------------------------------------------


def test_sse_s3_and_kms_headers(cluster: LocalCluster) -> None:
    """SSE-S3 and SSE-KMS headers round-trip (named KMS keys in detail: test_kms.py)."""
    name, s3, _ = new_tenant(cluster, "kms")
    s3.create_bucket(Bucket=name)
    r = s3.put_object(Bucket=name, Key="s3", Body=b"x", ServerSideEncryption="AES256")
    assert r["ServerSideEncryption"] == "AES256"
    r = s3.put_object(Bucket=name, Key="kms", Body=b"x", ServerSideEncryption="aws:kms")
    arn = r["SSEKMSKeyId"]  # the tenant's default key, made on first use
    assert r["ServerSideEncryption"] == "aws:kms" and arn.startswith(
        f"arn:aws:kms:us-east-1:{name}:key/")
    h = s3.head_object(Bucket=name, Key="kms")
    assert h["ServerSideEncryption"] == "aws:kms" and h["SSEKMSKeyId"] == arn
    g = s3.get_object(Bucket=name, Key="kms")
    assert g["SSEKMSKeyId"] == arn and g["Body"].read() == b"x"
    r = s3.put_object(Bucket=name, Key="kms2", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=arn)
    assert r["SSEKMSKeyId"] == arn
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=name, Key="no", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="not a key")
    assert ei.value.response["Error"]["Code"] == "KMS.NotFoundException"
    # Copy reports the target's encryption.
    r = s3.copy_object(Bucket=name, Key="copy", CopySource={"Bucket": name, "Key": "kms"})
    assert r["ServerSideEncryption"] == "AES256"
    # Bucket default encryption applies when a PUT names none.
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    r = s3.put_object(Bucket=name, Key="dflt", Body=b"x")
    assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"] == arn
    up = s3.create_multipart_upload(Bucket=name, Key="mp")
    assert up["ServerSideEncryption"] == "aws:kms"
    s3.abort_multipart_upload(Bucket=name, Key="mp", UploadId=up["UploadId"])


def test_sse_c_put_get_head_copy(cluster: LocalCluster) -> None:
    name, s3, _ = new_tenant(cluster, "ssec")
    s3.create_bucket(Bucket=name)
    k1, k2 = os.urandom(32), os.urandom(32)
    body = os.urandom(300_000)
    r = s3.put_object(Bucket=name, Key="c", Body=body, SSECustomerAlgorithm="AES256",
                      SSECustomerKey=k1)
    md5 = base64.b64encode(hashlib.md5(k1).digest()).decode()
    assert r["SSECustomerAlgorithm"] == "AES256" and r["SSECustomerKeyMD5"] == md5
    assert "ServerSideEncryption" not in r
    g = s3.get_object(Bucket=name, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=k1)
    assert g["Body"].read() == body and g["SSECustomerKeyMD5"] == md5
    rng = s3.get_object(Bucket=name, Key="c", SSECustomerAlgorithm="AES256",
                        SSECustomerKey=k1, Range="bytes=1000-1999")["Body"].read()
    assert rng == body[1000:2000]
    assert s3.head_object(Bucket=name, Key="c", SSECustomerAlgorithm="AES256",
                          SSECustomerKey=k1)["ContentLength"] == len(body)
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as ei:
            call(Bucket=name, Key="c")
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        with pytest.raises(ClientError) as ei:
            call(Bucket=name, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=k2)
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=name, Key="c")
    assert ei.value.response["Error"]["Code"] == "InvalidRequest"
    # Copy: source SSE-C key in, a new SSE-C key out.
    r = s3.copy_object(Bucket=name, Key="c2", CopySource={"Bucket": name, "Key": "c"},
                       CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=k1,
                       SSECustomerAlgorithm="AES256", SSECustomerKey=k2)
    assert r["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(k2).digest()).decode()
    g = s3.get_object(Bucket=name, Key="c2", SSECustomerAlgorithm="AES256", SSECustomerKey=k2)
    assert g["Body"].read() == body
    with pytest.raises(ClientError) as ei:
        s3.copy_object(Bucket=name, Key="c3", CopySource={"Bucket": name, "Key": "c"})
    assert ei.value.response["Error"]["Code"] == "InvalidRequest"
    # Only an HMAC of the key is kept.
    rec = cluster.manifest(name, "c")
    assert k1 not in rec.encode() and k1.hex() not in rec.encode().hex()


# --- rotation ------------------------------------------------------------------------------


def tessera(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args],
                          env={**os.environ, **cluster.env}, capture_output=True, text=True,
                          timeout=60)


def test_rotation_under_load_rewraps_and_every_object_reads(cluster: LocalCluster) -> None:
    name, s3, _ = new_tenant(cluster, "rot")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    written: dict[str, bytes] = {}
    lock = threading.Lock()
    for i in range(20):
        body = f"before {i} ".encode() * 100
        s3.put_object(Bucket=name, Key=f"k{i}", Body=body)
        written[f"k{i}"] = body
    stable = [written[f"k{i}"] for i in range(20)]
    errors: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 200:
            key = f"w{worker}-{n % 10}"
            body = f"{worker}/{n} ".encode() * 50
            try:
                s3.put_object(Bucket=name, Key=key, Body=body)
                with lock:
                    written[key] = body
                # Read back this worker's own key and one never rewritten (stable values).
                for k, want in ((key, body), (f"k{(n * 7) % 20}", stable[(n * 7) % 20])):
                    got = s3.get_object(Bucket=name, Key=k)["Body"].read()
                    if got != want:
                        errors.append(f"mismatch on {k}: {got[:20]!r} != {want[:20]!r}")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(exc))
            n += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            r = tessera(cluster, "tenant", "rotate-key", name, "--json")
            assert r.returncode == 0, r.stderr
    finally:
        time.sleep(0)  # let the load overlap the rotation; it stops on its own count
        stop.set()
        for t in threads:
            t.join(120)
    assert errors == []
    current = json.loads(r.stdout)["kek_version"]
    assert current == 3
    wait_for(lambda: not admin_request("GET", f"/tenants/{name}",
                                       env=cluster.env)["rewrap_pending"], "rewrap", timeout=60)
    for key, body in written.items():
        assert s3.get_object(Bucket=name, Key=key)["Body"].read() == body
        assert cluster.manifest(name, key).kek_version == current
    # History records (versioned bucket) are rewrapped too.
    versions = s3.list_object_versions(Bucket=name, Prefix="k1")["Versions"]
    assert versions
    for v in versions:
        got = s3.get_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
        assert got["Body"].read() == written[v["Key"]] or v["Key"].startswith("w")


# --- crypto-shred --------------------------------------------------------------------------


def test_shred_makes_tenant_data_unreadable_by_anyone(cluster: LocalCluster) -> None:
    victim, vs3, vcred = new_tenant(cluster, "shred")
    bystander, bs3, _ = new_tenant(cluster, "keep")
    for s3, bucket in ((vs3, victim), (bs3, bystander)):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="o", Body=b"precious " + bucket.encode())
    wrapped = Tenant.decode(cluster.db_get(tenant_key(victim)) or b"").keks
    assert wrapped
    r = tessera(cluster, "tenant", "shred", victim)
    assert r.returncode == 1 and "--confirm" in r.stderr
    r = tessera(cluster, "tenant", "shred", victim, "--confirm", victim)
    assert r.returncode == 0 and "destroyed" in r.stdout, r.stderr
    # The tenant's own key is revoked; its objects cannot be decrypted by anyone, including
    # a process holding the root key and the metadata store (here: the storage library).
    wait_for(lambda: _get_code(vs3, victim) in ("InvalidAccessKeyId", "AccessDenied"),
             "revocation", timeout=15)
    assert bs3.get_object(Bucket=bystander, Key="o")["Body"].read() == (
        b"precious " + bystander.encode())
    # (or, once the reclaim worker has removed the tenant's records, not even found)
    assert asyncio.run(_library_read(cluster, victim)) in ("KeyUnavailable", "gone")
    rec = Tenant.decode(cluster.db_get(tenant_key(victim)) or b"")
    assert rec.state == "shredded" and rec.keks == {}
    meta_files = [p for p in (cluster.data / "meta").iterdir() if p.is_file()]
    for blob in wrapped.values():
        assert not any(blob in p.read_bytes() for p in meta_files), "wrapped KEK remains"
    shown = admin_request("GET", f"/tenants/{victim}", env=cluster.env)
    assert shown["state"] == "shredded" and shown["kek_versions"] == []


def _get_code(s3: Any, bucket: str) -> str:
    try:
        s3.get_object(Bucket=bucket, Key="o")
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


async def _library_read(cluster: LocalCluster, tenant: str) -> str:
    from storage.cluster import Cluster
    from storage.config import load_config
    from storage.errors import KeyUnavailable, NotFound

    c = await Cluster.open(load_config(cluster.data / "tessera.toml"), probe=False)
    try:
        try:
            v = await c.objects.head(await c.buckets.get(tenant, tenant), "o")
        except NotFound:
            return "gone"
        try:
            async for _ in c.objects.read(v):
                return "readable"
        except KeyUnavailable:
            return "KeyUnavailable"
        return "empty"
    finally:
        await c.close()
