"""After a tenant is shredded, no path serves anything of it, to anyone: its objects'
bytes (current and noncurrent versions, ranges, copies made within it), and neither the
records left until the reclaim worker removes them (key names, sizes, ETags and checksums,
user metadata, tags, uploads and their parts, ACLs, policies), whatever a grant or a public
policy said; a copy another tenant made before the shred is its own and survives. The
module holds the reclaim worker's lease meanwhile, so those records stay to be attacked."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.s3.cors import NOT_ALLOWED
from ops.admincli import admin_request
from storage.cluster import Cluster
from storage.config import load_config
from storage.leases import Leases
from tests.integration.cluster import LocalCluster, fetch, wait_for

SECRET = "zq7secretzq7"  # in the victim's bytes, fields and the names only listings show
ORIGIN = "https://zq7.example"  # the victim's CORS rules allow it
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}


HOLDER = "test_shred_attacks"  # holds the reclaim worker's lease, not a gateway name


def _plain(url: str, method: str = "GET", headers: dict[str, str] | None = None,
           ) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one unsigned HTTP request (a browser's preflight)."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def _reclaim_lease(cluster: LocalCluster, take: bool) -> None:
    """Take the `reclaim` worker's lease from the gateway (`take`), or give it back."""
    c = await Cluster.open(load_config(cluster.data / "tessera.toml"), probe=False)
    try:
        leases = Leases(c.meta)
        if take:  # as a restarted gateway takes its predecessor's: `succeeds` its name
            info = await leases.holder("reclaim")
            assert info is not None, "the gateway runs the reclaim worker under its lease"
            prefix = info.holder.rsplit("/", 1)[0] + "/"
            assert await leases.acquire("reclaim", HOLDER, 3600.0, succeeds=prefix)
        else:
            lease = await leases.acquire("reclaim", HOLDER, 1.0)
            if lease is not None:
                await leases.release(lease)
    finally:
        await c.close()


@pytest.fixture(scope="module")
def paused_reclaim(cluster: LocalCluster) -> Iterator[None]:
    """The reclaim worker stopped (its lease is this test's), so the shredded tenant's
    records stay for the test to attack; given back at the end."""
    log = cluster.data / "logs" / "gateway.log"
    before = log.read_text(errors="replace").count("worker reclaim: lease lost")
    asyncio.run(_reclaim_lease(cluster, True))
    wait_for(lambda: log.read_text(errors="replace").count("worker reclaim: lease lost")
             > before, "the gateway to stop its reclaim worker", timeout=60)
    yield
    asyncio.run(_reclaim_lease(cluster, False))


@pytest.fixture(scope="module")
def w(cluster: LocalCluster, paused_reclaim: None) -> dict[str, Any]:
    """Victim `v` opens its versioned bucket to everyone (public-read ACL, a public policy,
    an ACL grant to `b`); `b` copies an object out; then `v` is shredded."""
    tag = uuid.uuid4().hex[:8]
    vname, bid = f"shv-{tag}", "b" * 56 + tag
    v = cluster.tenant_client(vname)
    b = cluster.tenant_client(f"shb-{tag}", {"canonical_id": bid})
    bucket, key = vname, "o"
    v.create_bucket(Bucket=bucket)
    v.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = v.put_object(Bucket=bucket, Key=key, Body=f"old {SECRET}".encode(),
                         Metadata={"m": SECRET}, Tagging=f"t={SECRET}")["VersionId"]
    v.put_object(Bucket=bucket, Key=key, Body=f"new {SECRET}".encode(), Metadata={"m": SECRET},
                 Tagging=f"t={SECRET}", GrantRead=f"id={bid}")
    v.copy_object(Bucket=bucket, Key="inside", CopySource={"Bucket": bucket, "Key": key})
    v.put_object(Bucket=bucket, Key=f"{SECRET}-name", Body=b"")
    up = v.create_multipart_upload(Bucket=bucket, Key=f"{SECRET}-upload")["UploadId"]
    v.upload_part(Bucket=bucket, Key=f"{SECRET}-upload", UploadId=up, PartNumber=1,
                  Body=SECRET.encode() * 100)
    v.put_bucket_acl(Bucket=bucket, ACL="public-read")
    v.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "t", "Value": SECRET}]})
    v.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
    v.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "PUT"], "AllowedHeaders": ["*"],
         "ExposeHeaders": ["x-amz-meta-m"]}]})
    status, headers, _ = _plain(f"{cluster.endpoint}/{bucket}/{key}", "OPTIONS", PREFLIGHT)
    assert status == 200 and headers.get("Access-Control-Allow-Origin") == ORIGIN, headers
    own = f"shb-{tag}"
    b.create_bucket(Bucket=own)
    b.copy_object(Bucket=own, Key="copy", CopySource={"Bucket": bucket, "Key": key})
    assert b.get_object(Bucket=bucket, Key=key)["Body"].read() == f"new {SECRET}".encode()
    admin_request("POST", f"/tenants/{vname}/shred", {"confirm": vname, "wait_s": 0},
                  env=cluster.env)
    # "shredded" holds at once in every gateway process: each fetch is a new connection,
    # which the gateway's worker processes take in turn
    for _ in range(8):
        status, body = fetch(f"{cluster.endpoint}/{bucket}/{key}")
        assert status == 403 and SECRET.encode() not in body, (status, body)
    return {"b": b, "bucket": bucket, "key": key, "first": first, "upload": up, "own": own,
            "endpoint": cluster.endpoint}


def _paths(w: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    bucket, key, up = w["bucket"], w["key"], w["upload"]
    return {
        "GetObject": lambda c: c.get_object(Bucket=bucket, Key=key)["Body"].read(),
        "GetNoncurrent": lambda c: c.get_object(Bucket=bucket, Key=key,
                                                VersionId=w["first"])["Body"].read(),
        "Range": lambda c: c.get_object(Bucket=bucket, Key=key, Range="bytes=0-3"),
        "GetCopyWithin": lambda c: c.get_object(Bucket=bucket, Key="inside"),
        "HeadObject": lambda c: c.head_object(Bucket=bucket, Key=key),
        "GetObjectAttributes": lambda c: c.get_object_attributes(
            Bucket=bucket, Key=key, ObjectAttributes=["ETag", "Checksum", "ObjectSize"]),
        "GetObjectTagging": lambda c: c.get_object_tagging(Bucket=bucket, Key=key),
        "GetObjectAcl": lambda c: c.get_object_acl(Bucket=bucket, Key=key),
        "ListObjectsV2": lambda c: c.list_objects_v2(Bucket=bucket),
        "ListObjects": lambda c: c.list_objects(Bucket=bucket),
        "ListObjectVersions": lambda c: c.list_object_versions(Bucket=bucket),
        "ListMultipartUploads": lambda c: c.list_multipart_uploads(Bucket=bucket),
        "ListParts": lambda c: c.list_parts(Bucket=bucket, Key=f"{SECRET}-upload",
                                            UploadId=up),
        "GetBucketTagging": lambda c: c.get_bucket_tagging(Bucket=bucket),
        "GetBucketPolicy": lambda c: c.get_bucket_policy(Bucket=bucket),
        "GetBucketAcl": lambda c: c.get_bucket_acl(Bucket=bucket),
        "CopyOut": lambda c: c.copy_object(Bucket=w["own"], Key="late",
                                           CopySource={"Bucket": bucket, "Key": key}),
    }


PATHS = list(_paths({"bucket": "", "key": "", "upload": "", "first": "", "own": ""}))


@pytest.mark.parametrize("path", PATHS)
def test_shredded_tenant_serves_nothing_to_a_grantee(w: dict[str, Any], path: str) -> None:
    with pytest.raises(ClientError) as ei:
        _paths(w)[path](w["b"])
    r = ei.value.response
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 403, r
    if path != "HeadObject":  # AWS's plain text (a HEAD has no body): no word of the keys
        assert (r["Error"]["Code"], r["Error"]["Message"]) == ("AccessDenied",
                                                                "Access Denied"), r
    if path != "ListParts":  # it names the upload's key (echoed as the error's Resource)
        assert SECRET not in str(r), r


def test_shredded_tenant_serves_nothing_anonymously(w: dict[str, Any]) -> None:
    base = f"{w['endpoint']}/{w['bucket']}"
    for url in (f"{base}/{w['key']}", f"{base}?list-type=2", f"{base}?versions",
                f"{base}?uploads", f"{base}/{w['key']}?tagging", f"{base}?policy"):
        status, body = fetch(url)
        assert status == 403 and SECRET.encode() not in body, (url, status, body)
        assert b"<Message>Access Denied</Message>" in body, (url, body)


@pytest.mark.parametrize("target", ["object", "bucket"])
def test_shredded_bucket_answers_no_preflight_from_its_cors_rules(w: dict[str, Any],
                                                                  target: str) -> None:
    """Its CORS rules are records of the shredded tenant too: a preflight the rules allowed
    before the shred is refused as AWS refuses one no rule allows, with no Allow header."""
    url = f"{w['endpoint']}/{w['bucket']}" + (f"/{w['key']}" if target == "object" else "")
    status, headers, body = _plain(url, "OPTIONS", PREFLIGHT)
    assert status == 403, (status, headers, body)
    assert b"<Code>AccessForbidden</Code>" in body, body
    assert f"<Message>{NOT_ALLOWED}</Message>".encode() in body, body
    assert not [h for h in headers if h.lower().startswith("access-control-")], headers


def test_shredded_bucket_answers_carry_no_cors_headers(w: dict[str, Any]) -> None:
    status, headers, body = _plain(f"{w['endpoint']}/{w['bucket']}/{w['key']}", "GET",
                                   {"Origin": ORIGIN})
    assert status == 403 and SECRET.encode() not in body, (status, body)
    assert not [h for h in headers if h.lower().startswith("access-control-")], headers


def test_copy_made_by_another_tenant_before_the_shred_survives(w: dict[str, Any]) -> None:
    got = w["b"].get_object(Bucket=w["own"], Key="copy")["Body"].read()
    assert got == f"new {SECRET}".encode()


async def _volume_reads_after_shred(cluster: LocalCluster, name: str, data: bytes,
                                    ) -> dict[str, str]:
    """Write and read back a volume through one open handle (as the block driver holds it)
    and the block driver's two caches in front of it, shred the tenant, and read again
    through each: what each answers."""
    from gateway.block.cache import ExtentCache
    from storage.errors import KeyUnavailable
    from storage.volume_overlay import JournaledVolume
    from storage.volumes import VolumeService

    c = await Cluster.open(load_config(cluster.data / "tessera.toml"), probe=False)
    try:
        h = await VolumeService(c.cfg, c.meta, c.tenants, c.stripes).open(
            name, "vol", holder="test", lease_ttl_s=3.0)
        try:
            await h.write(0, data)
            views = {"handle": h, "extent cache": ExtentCache(h),
                     "journaled": JournaledVolume(h)}
            for view in views.values():
                assert await view.read(0, len(data)) == data  # cached in each
            assert views["journaled"].try_read(0, len(data)) == data
            await asyncio.to_thread(admin_request, "POST", f"/tenants/{name}/shred",
                                    {"confirm": name, "wait_s": 0}, env=cluster.env)
            out = {}
            for what, view in views.items():
                try:
                    got = await view.read(0, len(data))
                except KeyUnavailable:
                    out[what] = "KeyUnavailable"
                else:
                    out[what] = "plaintext" if got == data else "other bytes"
            # the driver's no-await path (FUSE threads) leaves it to `read` from then on
            cached = views["journaled"].try_read(0, len(data))
            out["journaled, no await"] = "plaintext" if cached == data else str(cached)
            return out
        finally:
            await h.close()
    finally:
        await c.close()


def test_an_open_volume_reads_nothing_after_the_shred(cluster: LocalCluster,
                                                      paused_reclaim: None) -> None:
    """A volume open across the shred (a mounted volume's daemon) keeps no key: neither
    the ciphers the handle kept for the extents it wrote and read, nor the plaintext the
    block driver's caches hold, answer any more."""
    name = f"shvol-{uuid.uuid4().hex[:8]}"
    admin_request("POST", "/tenants", {"name": name}, env=cluster.env)
    admin_request("POST", f"/tenants/{name}/volumes", {"name": "vol", "size": "16M"},
                  env=cluster.env)
    data = SECRET.encode() * (2 * 1024 * 1024 // len(SECRET))
    assert asyncio.run(_volume_reads_after_shred(cluster, name, data)) == {
        "handle": "KeyUnavailable", "extent cache": "KeyUnavailable",
        "journaled": "KeyUnavailable", "journaled, no await": "None"}


async def _no_await_reads_after_shred(cluster: LocalCluster, name: str, data: bytes) -> str:
    """Only the driver's no-await path reads after the shred (an idle mount whose reads
    the overlay and clean cache answer): the lease renewal loop must stop it by itself."""
    import time

    from storage.volume_overlay import JournaledVolume
    from storage.volumes import VolumeService

    c = await Cluster.open(load_config(cluster.data / "tessera.toml"), probe=False)
    try:
        h = await VolumeService(c.cfg, c.meta, c.tenants, c.stripes).open(
            name, "vol", holder="test", lease_ttl_s=3.0)
        try:
            await h.write(0, data)
            jv = JournaledVolume(h)
            assert await jv.read(0, len(data)) == data
            await asyncio.to_thread(admin_request, "POST", f"/tenants/{name}/shred",
                                    {"confirm": name, "wait_s": 0}, env=cluster.env)
            # bound: lease ttl/3 + SHORT_TTL_S (b637968); polled, generously
            deadline = time.monotonic() + 60.0
            while (got := jv.try_read(0, len(data))) is not None:
                if time.monotonic() > deadline:
                    return "plaintext" if got == data else "other bytes"
                await asyncio.sleep(0.2)
            return "None"
        finally:
            await h.close()
    finally:
        await c.close()


def test_an_idle_mount_no_await_path_stops_after_the_shred(cluster: LocalCluster,
                                                          paused_reclaim: None) -> None:
    """review15f: the renewal loop's check_revoked is what stops `try_read` when no awaited
    read comes; test_an_open_volume_reads_nothing_after_the_shred passes without it."""
    name = f"shvol2-{uuid.uuid4().hex[:8]}"
    admin_request("POST", "/tenants", {"name": name}, env=cluster.env)
    admin_request("POST", f"/tenants/{name}/volumes", {"name": "vol", "size": "16M"},
                  env=cluster.env)
    data = SECRET.encode() * (2 * 1024 * 1024 // len(SECRET))
    assert asyncio.run(_no_await_reads_after_shred(cluster, name, data)) == "None"
