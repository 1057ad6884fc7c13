"""Archive tier through boto3: storage classes, RestoreObject, lifecycle rules (zone loss is in
test_archive_zone_loss).

The cluster runs with 10-second "days" (`tessera up --day-seconds 10`): restore latencies
scale with the day (Expedited ~0.03 s, Standard ~1.7 s, Bulk 5 s; DEEP_ARCHIVE Standard
5 s) and a restored copy with Days=1 lives until the next 10-second boundary after
completion + 10 s. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ops.admincli import admin_request
from ops.botoconfig import no_retries
from storage.shards.format import HEADER_BYTES, ShardHeader
from tests.integration.archive_model import run_model
from tests.integration.cluster import LocalCluster, wait_for

DAY = 10.0
ARCHIVE_NODES = {f"a{i}" for i in range(1, 7)}
KNOWN = b"TESSERA-ARCHIVE-KNOWN-PLAINTEXT-0123456789/"
RESTORE_RE = re.compile(r'^ongoing-request="false", expiry-date="([^"]+)"$')


def start_cluster(path: Path) -> LocalCluster:
    return LocalCluster(path, up_args=["--day-seconds", str(DAY)]).start()


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The module's cluster, with a 1-second GC grace: at the default 60 s each wait below
    for a retired copy's shards to be collected took a minute."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_GC_GRACE_S", "1")
        c = start_cluster(tmp_path_factory.mktemp("archive"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def s3(arch: LocalCluster) -> Any:
    return arch.client()



def error(fn: Callable[[], Any]) -> tuple[int, dict[str, str]]:
    with pytest.raises(ClientError) as ei:
        fn()
    r = ei.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]


def restore(s3: Any, key: str, days: int = 1, tier: str = "Standard", bucket: str = "arch",
            ) -> int:
    r = s3.restore_object(Bucket=bucket, Key=key, RestoreRequest={
        "Days": days, "GlacierJobParameters": {"Tier": tier}})
    return r["ResponseMetadata"]["HTTPStatusCode"]


def restored(s3: Any, key: str, bucket: str = "arch") -> str | None:
    h = s3.head_object(Bucket=bucket, Key=key).get("Restore") or ""
    return h if h.startswith('ongoing-request="false"') else None


def run_once(c: LocalCluster) -> str:
    env = {**os.environ, "TESSERA_CONFIG": c.env["TESSERA_CONFIG"]}
    out = subprocess.run([sys.executable, "-m", "ops.cli", "lifecycle", "run-once",
                          "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def shard_set(c: LocalCluster) -> dict[str, set[str]]:
    return {n: {p.name for p in files} for n, files in c.shard_files().items()}


def new_shards(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    return {n: after[n] - before.get(n, set()) for n in after if after[n] - before.get(n, set())}


def test_storage_classes_head_get_list(s3: Any) -> None:
    s3.create_bucket(Bucket="arch")
    for key, sc in (("cls/glacier", "GLACIER"), ("cls/deep", "DEEP_ARCHIVE"),
                    ("cls/ir", "GLACIER_IR"), ("cls/ia", "STANDARD_IA")):
        s3.put_object(Bucket="arch", Key=key, Body=b"x" * 1000, StorageClass=sc)
        h = s3.head_object(Bucket="arch", Key=key)
        assert h["StorageClass"] == sc and "Restore" not in h
    for key in ("cls/glacier", "cls/deep"):
        status, err = error(lambda k=key: s3.get_object(Bucket="arch", Key=k))
        assert status == 403 and err["Code"] == "InvalidObjectState"
        assert err["StorageClass"] in ("GLACIER", "DEEP_ARCHIVE")
    for key in ("cls/ir", "cls/ia"):
        assert s3.get_object(Bucket="arch", Key=key)["Body"].read() == b"x" * 1000
    listed = {o["Key"]: o["StorageClass"]
              for o in s3.list_objects_v2(Bucket="arch", Prefix="cls/")["Contents"]}
    assert listed == {"cls/glacier": "GLACIER", "cls/deep": "DEEP_ARCHIVE",
                      "cls/ir": "GLACIER_IR", "cls/ia": "STANDARD_IA"}


def test_restore_refusals(s3: Any) -> None:
    s3.put_object(Bucket="arch", Key="ref/std", Body=b"hot")
    status, err = error(lambda: restore(s3, "ref/std"))
    assert (status, err["Code"]) == (403, "InvalidObjectState")
    status, err = error(lambda: restore(s3, "ref/missing"))
    assert (status, err["Code"]) == (404, "NoSuchKey")
    s3.put_object(Bucket="arch", Key="ref/deep", Body=b"cold", StorageClass="DEEP_ARCHIVE")
    status, err = error(lambda: restore(s3, "ref/deep", tier="Expedited"))
    assert (status, err["Code"]) == (503, "GlacierExpeditedRetrievalNotAvailable")
    assert restore(s3, "ref/deep", tier="Bulk") == 202
    assert s3.head_object(Bucket="arch", Key="ref/deep")["Restore"] == 'ongoing-request="true"'
    assert restore(s3, "ref/deep", tier="Standard") == 202  # a faster tier upgrades it
    wait_for(lambda: restored(s3, "ref/deep"), what="DEEP_ARCHIVE restore")
    assert s3.get_object(Bucket="arch", Key="ref/deep")["Body"].read() == b"cold"


def test_listings_show_restore_status(s3: Any) -> None:
    """`x-amz-optional-object-attributes: RestoreStatus` (OptionalObjectAttributes) adds
    RestoreStatus to ListObjects, ListObjectsV2 and ListObjectVersions entries being
    restored or restored, as AWS does; never to others or to delete markers."""
    b = "arch-ls"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    for key, sc in (("cold", "GLACIER"), ("deep", "DEEP_ARCHIVE"), ("done", "GLACIER"),
                    ("hot", "STANDARD")):
        s3.put_object(Bucket=b, Key=key, Body=b"x" * 1000, StorageClass=sc)
    s3.put_object(Bucket=b, Key="gone", Body=b"x")
    s3.delete_object(Bucket=b, Key="gone")
    assert restore(s3, "done", tier="Expedited", bucket=b) == 202
    header = wait_for(lambda: restored(s3, "done", bucket=b), what="restore")
    m = RESTORE_RE.match(header)
    assert m
    expiry = email.utils.parsedate_to_datetime(m.group(1))
    assert restore(s3, "deep", tier="Bulk", bucket=b) == 202  # 20 s with 10-second days
    want = {"deep": {"IsRestoreInProgress": True},
            "done": {"IsRestoreInProgress": False, "RestoreExpiryDate": expiry}}
    opt = {"OptionalObjectAttributes": ["RestoreStatus"]}

    def statuses(entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {e["Key"]: e["RestoreStatus"] for e in entries if "RestoreStatus" in e}

    assert statuses(s3.list_objects_v2(Bucket=b, **opt)["Contents"]) == want
    assert statuses(s3.list_objects(Bucket=b, **opt)["Contents"]) == want
    versions = s3.list_object_versions(Bucket=b, **opt)
    assert statuses(versions["Versions"]) == want
    assert statuses(versions["DeleteMarkers"]) == {}
    # Not asked for: not there.
    assert statuses(s3.list_objects_v2(Bucket=b)["Contents"]) == {}
    assert statuses(s3.list_object_versions(Bucket=b)["Versions"]) == {}
    status, err = error(lambda: s3.list_objects_v2(
        Bucket=b, OptionalObjectAttributes=["RestoreStatus", "Owner"]))
    assert (status, err["Code"]) == (400, "InvalidArgument")
    # No restored copy appears later, beside the other tests' shard counts: the version goes
    # (and its queued job with it) before the job is due.
    s3.delete_object(Bucket=b, Key="deep",
                     VersionId=s3.head_object(Bucket=b, Key="deep")["VersionId"])


def test_restore_states_expiry_and_removal(arch: LocalCluster, s3: Any) -> None:
    data = os.urandom(300_000) + KNOWN * 5000
    s3.put_object(Bucket="arch", Key="rs/obj", Body=data, StorageClass="GLACIER",
                  Metadata={"color": "blue"})
    before = shard_set(arch)
    assert restore(s3, "rs/obj", tier="Bulk") == 202
    assert s3.head_object(Bucket="arch", Key="rs/obj")["Restore"] == 'ongoing-request="true"'
    status, err = error(lambda: restore(s3, "rs/obj", tier="Bulk"))
    assert (status, err["Code"]) == (409, "RestoreAlreadyInProgress")
    status, err = error(lambda: s3.get_object(Bucket="arch", Key="rs/obj"))
    assert status == 403
    assert restore(s3, "rs/obj", tier="Expedited") == 202  # upgrade
    header = wait_for(lambda: restored(s3, "rs/obj"), what="restore to complete")
    m = RESTORE_RE.match(header)
    assert m, header
    expiry = email.utils.parsedate_to_datetime(m.group(1)).timestamp()
    assert expiry % DAY == 0  # rounded up to a (scaled) midnight
    assert time.time() + DAY - 1 <= expiry <= time.time() + 2 * DAY + 1
    h = s3.head_object(Bucket="arch", Key="rs/obj")
    assert h["StorageClass"] == "GLACIER" and h["Metadata"] == {"color": "blue"}
    g = s3.get_object(Bucket="arch", Key="rs/obj")
    assert g["Body"].read() == data and g["StorageClass"] == "GLACIER"
    assert g["Restore"] == header
    assert s3.get_object(Bucket="arch", Key="rs/obj", Range="bytes=299990-300020")[
        "Body"].read() == data[299990:300021]
    copy = new_shards(before, shard_set(arch))
    assert copy and not set(copy) & ARCHIVE_NODES  # the hot copy is on standard nodes
    # re-issuing on a restored object: 200, expiry recomputed from now
    assert restore(s3, "rs/obj", days=2) == 200
    m2 = RESTORE_RE.match(s3.head_object(Bucket="arch", Key="rs/obj")["Restore"])
    assert m2 and email.utils.parsedate_to_datetime(m2.group(1)).timestamp() > expiry
    # shorten it again so the copy expires soon, then it is removed
    assert restore(s3, "rs/obj", days=1) == 200
    wait_for(lambda: "Restore" not in s3.head_object(Bucket="arch", Key="rs/obj"),
             timeout=3 * DAY + 10, what="restored copy to expire")
    status, err = error(lambda: s3.get_object(Bucket="arch", Key="rs/obj"))
    assert (status, err["Code"]) == (403, "InvalidObjectState")
    copy_files = {(n, f) for n, fs in copy.items() for f in fs}
    wait_for(lambda: not copy_files & {(n, f) for n, fs in shard_set(arch).items() for f in fs},
             timeout=90, what="restored copy's shards to be collected")



def test_deleting_a_restored_object_removes_its_copy(arch: LocalCluster, s3: Any) -> None:
    """As on S3, deleting an archived object (or overwriting it) deletes its restored copy:
    the copy's expiry entry is made due at once (+ GC grace) in the delete's transaction and
    its shards are collected, not left on the standard nodes until the restore's expiry
    (Days=1000 here, 2^31-1 allowed; a copy no request could reach any more)."""
    def copies() -> set[str]:
        doc = admin_request("GET", "/queues", env=arch.env)
        return {c["key"] for c in doc["copies"] if c["bucket"] == "arch"}

    data = os.urandom(200_000)
    for key in ("rd/deleted", "rd/overwritten"):
        s3.put_object(Bucket="arch", Key=key, Body=data, StorageClass="GLACIER")
    before = shard_set(arch)
    for key in ("rd/deleted", "rd/overwritten"):
        assert restore(s3, key, days=1000, tier="Expedited") == 202
        wait_for(lambda key=key: restored(s3, key), what="restore to complete")
    assert {"rd/deleted", "rd/overwritten"} <= copies()
    made = new_shards(before, shard_set(arch))
    assert made
    s3.delete_object(Bucket="arch", Key="rd/deleted")
    s3.put_object(Bucket="arch", Key="rd/overwritten", Body=b"new")
    # the copies' expiry entries are due now (+ GC grace) and the expiry worker retires them
    wait_for(lambda: not {"rd/deleted", "rd/overwritten"} & copies(), timeout=90,
             what="the restored copies' expiry entries to be retired")
    files = {(n, f) for n, fs in made.items() for f in fs}
    wait_for(lambda: not files & {(n, f) for n, fs in shard_set(arch).items() for f in fs},
             timeout=90, what="the restored copies' shards to be collected")


def test_copies_of_a_restored_object_outlive_its_restored_copy(arch: LocalCluster,
                                                              s3: Any) -> None:
    """Review18b: what was copied out of a restored copy (CopyObject to another key, and the
    in-place copy to STANDARD that retires the archived version with its restored copy) is
    its own data: once the restored copy's shards are collected both copies still read back
    whole."""
    data = os.urandom(300_000)
    s3.put_object(Bucket="arch", Key="rc/src", Body=data, StorageClass="GLACIER")
    before = shard_set(arch)
    assert restore(s3, "rc/src", days=1000, tier="Expedited") == 202
    wait_for(lambda: restored(s3, "rc/src"), what="restore to complete")
    made = new_shards(before, shard_set(arch))
    assert made
    s3.copy_object(Bucket="arch", Key="rc/other", CopySource={"Bucket": "arch", "Key": "rc/src"})
    s3.copy_object(Bucket="arch", Key="rc/src", CopySource={"Bucket": "arch", "Key": "rc/src"},
                   StorageClass="STANDARD")
    files = {(n, f) for n, fs in made.items() for f in fs}
    wait_for(lambda: not files & {(n, f) for n, fs in shard_set(arch).items() for f in fs},
             timeout=90, what="the restored copy's shards to be collected")
    for key in ("rc/other", "rc/src"):
        assert s3.get_object(Bucket="arch", Key=key)["Body"].read() == data, key


def test_archive_shards_compressed_and_encrypted(arch: LocalCluster, s3: Any) -> None:
    data = KNOWN * 50_000  # ~2 MiB, very compressible
    before = shard_set(arch)
    s3.put_object(Bucket="arch", Key="enc/obj", Body=data, StorageClass="GLACIER")
    added = new_shards(before, shard_set(arch))
    assert set(added) <= ARCHIVE_NODES and len(added) == 6
    total = 0
    for node, names in added.items():
        for name in names:
            path = next(p for p in arch.shard_files()[node] if p.name == name)
            raw = path.read_bytes()
            hdr = ShardHeader.unpack(raw[:HEADER_BYTES])
            assert (hdr.k, hdr.m) == (3, 3)
            total += len(raw)
    assert total < len(data) // 10  # compressed before erasure coding (3+3 doubles it)
    needle = KNOWN[:24]
    for files in arch.shard_files().values():
        for p in files:
            assert needle not in p.read_bytes()


def test_lifecycle_transition_keeps_head(arch: LocalCluster, s3: Any) -> None:
    s3.create_bucket(Bucket="arch-lc")
    data = os.urandom(200_000) + KNOWN * 4000
    s3.put_object(Bucket="arch-lc", Key="logs/a", Body=data, Metadata={"m": "1"},
                  Tagging="team=ops", ContentType="text/plain")
    s3.put_object(Bucket="arch-lc", Key="keep/b", Body=data)
    head0 = s3.head_object(Bucket="arch-lc", Key="logs/a")
    before = shard_set(arch)
    s3.put_bucket_lifecycle_configuration(Bucket="arch-lc", LifecycleConfiguration={"Rules": [
        {"ID": "to-glacier", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
         "Transitions": [{"Days": 0, "StorageClass": "GLACIER"}]}]})

    def moved() -> bool:
        run_once(arch)
        return s3.head_object(Bucket="arch-lc", Key="logs/a").get("StorageClass") == "GLACIER"

    wait_for(moved, timeout=3 * DAY, what="transition to GLACIER")
    h = s3.head_object(Bucket="arch-lc", Key="logs/a")
    for k in ("ETag", "LastModified", "ContentLength", "ContentType", "Metadata"):
        assert h[k] == head0[k]
    assert s3.get_object_tagging(Bucket="arch-lc", Key="logs/a")["TagSet"] == [
        {"Key": "team", "Value": "ops"}]
    assert "StorageClass" not in s3.head_object(Bucket="arch-lc", Key="keep/b")
    added = new_shards(before, shard_set(arch))
    assert added and set(added) <= ARCHIVE_NODES
    status, _ = error(lambda: s3.get_object(Bucket="arch-lc", Key="logs/a"))
    assert status == 403
    assert restore(s3, "logs/a", tier="Expedited", bucket="arch-lc") == 202
    wait_for(lambda: restored(s3, "logs/a", bucket="arch-lc"), what="restore")
    assert s3.get_object(Bucket="arch-lc", Key="logs/a")["Body"].read() == data


def test_lifecycle_expiration_rules(arch: LocalCluster, s3: Any) -> None:
    b = "arch-exp"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=b, Key="exp/tagged", Body=b"1", Tagging="k=v")
    s3.put_object(Bucket=b, Key="exp/untagged", Body=b"1")
    s3.put_object(Bucket=b, Key="big/large", Body=b"L" * 2000)
    s3.put_object(Bucket=b, Key="big/small", Body=b"s")
    s3.put_object(Bucket=b, Key="nc/x", Body=b"v1")
    s3.put_object(Bucket=b, Key="nc/x", Body=b"v2")
    s3.put_object(Bucket=b, Key="nc/y", Body=b"y1")
    s3.delete_object(Bucket=b, Key="nc/y")
    s3.put_object(Bucket=b, Key="nct/z", Body=b"z" * 1000)
    s3.put_object(Bucket=b, Key="nct/z", Body=b"Z" * 1000)
    upload = s3.create_multipart_upload(Bucket=b, Key="mpu/u")["UploadId"]
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "tagged", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "exp/", "Tags": [{"Key": "k", "Value": "v"}]}},
         "Expiration": {"Days": 1}},
        {"ID": "big", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "big/", "ObjectSizeGreaterThan": 1000}},
         "Expiration": {"Days": 1}},
        {"ID": "noncurrent", "Status": "Enabled", "Filter": {"Prefix": "nc/"},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
        {"ID": "nct", "Status": "Enabled", "Filter": {"Prefix": "nct/"},
         "NoncurrentVersionTransitions": [{"NoncurrentDays": 1, "StorageClass": "GLACIER"}]},
        {"ID": "mpu", "Status": "Enabled", "Filter": {"Prefix": "mpu/"},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]})

    def versions(key: str) -> list[dict[str, Any]]:
        r = s3.list_object_versions(Bucket=b, Prefix=key)
        return [v for v in r.get("Versions", []) + r.get("DeleteMarkers", []) if v["Key"] == key]

    def done() -> bool:
        run_once(arch)
        cur = {o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])}
        nct = s3.list_object_versions(Bucket=b, Prefix="nct/").get("Versions", [])
        uploads = s3.list_multipart_uploads(Bucket=b).get("Uploads", [])
        return (cur == {"exp/untagged", "big/small", "nc/x", "nct/z"}
                and len(versions("nc/x")) == 1 and versions("nc/y") == []
                and sorted(v["StorageClass"] for v in nct) == ["GLACIER", "STANDARD"]
                and not uploads)

    wait_for(done, timeout=4 * DAY, what="lifecycle expirations")
    assert s3.get_object(Bucket=b, Key="nc/x")["Body"].read() == b"v2"
    tagged = versions("exp/tagged")
    assert any(v.get("IsLatest") and "Size" not in v for v in tagged)  # a delete marker
    status, err = error(lambda: s3.list_parts(Bucket=b, Key="mpu/u", UploadId=upload))
    assert err["Code"] == "NoSuchUpload"


def test_multipart_to_glacier_is_compressed_and_restores(arch: LocalCluster, s3: Any) -> None:
    parts = [KNOWN * 200_000, KNOWN * 1_000]  # > 5 MiB then a small last part
    data = b"".join(parts)
    before = shard_set(arch)
    up = s3.create_multipart_upload(Bucket="arch", Key="mpu/obj", StorageClass="GLACIER")
    done = []
    for n, body in enumerate(parts, start=1):
        r = s3.upload_part(Bucket="arch", Key="mpu/obj", UploadId=up["UploadId"],
                           PartNumber=n, Body=body)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    listed = s3.list_parts(Bucket="arch", Key="mpu/obj", UploadId=up["UploadId"])["Parts"]
    assert [p["Size"] for p in listed] == [len(b) for b in parts]
    s3.complete_multipart_upload(Bucket="arch", Key="mpu/obj", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": done})
    head = s3.head_object(Bucket="arch", Key="mpu/obj")
    assert head["ContentLength"] == len(data) and head["StorageClass"] == "GLACIER"
    added = new_shards(before, shard_set(arch))
    assert set(added) <= ARCHIVE_NODES
    stored = sum(p.size for node, names in added.items()
                 for p in arch.shard_files()[node] if p.name in names)
    assert stored < len(data) // 10  # zstd before encryption, as for single PUTs
    assert restore(s3, "mpu/obj") == 202
    wait_for(lambda: restored(s3, "mpu/obj"), timeout=3 * DAY, what="restore")
    assert s3.get_object(Bucket="arch", Key="mpu/obj")["Body"].read() == data
    got = s3.get_object(Bucket="arch", Key="mpu/obj", Range="bytes=5-9")["Body"].read()
    assert got == data[5:10]


CUSTOMER_KEY = bytes(range(32))


def ssec(key: bytes = CUSTOMER_KEY) -> dict[str, Any]:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def test_sse_c_objects_transition_and_restore_without_the_key(arch: LocalCluster,
                                                             s3: Any) -> None:
    """As on AWS, lifecycle moves SSE-C objects and RestoreObject needs no key: the
    ciphertext is re-coded as it is (3+3 on archive nodes, not compressed); GET after the
    restore needs the customer key and returns the exact bytes."""
    b = "arch-ssec"
    s3.create_bucket(Bucket=b)
    rnd = random.Random(7)
    single = rnd.randbytes(2_500_000) + KNOWN * 2000  # three segments, the last one short
    parts = [rnd.randbytes(5 * 1024 * 1024), KNOWN * 3000]
    s3.put_object(Bucket=b, Key="c/single", Body=single, Metadata={"m": "1"}, **ssec())
    up = s3.create_multipart_upload(Bucket=b, Key="c/multi", **ssec())["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(
        Bucket=b, Key="c/multi", UploadId=up, PartNumber=n, Body=body, **ssec())["ETag"]}
        for n, body in enumerate(parts, start=1)]
    s3.complete_multipart_upload(Bucket=b, Key="c/multi", UploadId=up,
                                 MultipartUpload={"Parts": done}, **ssec())
    tiny = KNOWN * 40  # inline in its record by default: moved out to archive shards too
    s3.put_object(Bucket=b, Key="c/tiny", Body=tiny, **ssec())
    bodies = {"c/single": single, "c/multi": b"".join(parts), "c/tiny": tiny}
    heads = {k: s3.head_object(Bucket=b, Key=k, **ssec()) for k in bodies}
    before = {k: arch.manifest(b, k) for k in bodies}
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": "c/"},
         "Transitions": [{"Days": 0, "StorageClass": "GLACIER"}]}]})

    def moved() -> bool:
        run_once(arch)
        return all(s3.head_object(Bucket=b, Key=k, **ssec()).get("StorageClass") == "GLACIER"
                   for k in bodies)

    wait_for(moved, timeout=3 * DAY, what="SSE-C transition to GLACIER")
    for k in bodies:
        h = s3.head_object(Bucket=b, Key=k, **ssec())
        for field in ("ETag", "ContentLength", "LastModified", "Metadata", "SSECustomerKeyMD5"):
            assert h[field] == heads[k][field]
        after = arch.manifest(b, k)
        # the same data key and identity (the segments' associated data), new stripes
        assert (after.dek, after.identity_version) == (before[k].dek,
                                                       before[k].identity_version)
        assert {p.stripe_id for p in after.parts}.isdisjoint(
            {p.stripe_id for p in before[k].parts})
        assert [(p.profile, p.k, p.m, p.compressed) for p in after.parts] == \
            [("archive", 3, 3, False)] * len(before[k].parts)
    files = arch.shard_files()
    for k in bodies:
        for p in arch.manifest(b, k).parts:  # whole, on archive nodes, still ciphertext
            assert set(p.nodes) <= ARCHIVE_NODES and len(p.nodes) == 6
            for i, node in enumerate(p.nodes):
                path = next(f for f in files[node] if f.name == f"{p.stripe_id.hex()}.{i}")
                assert KNOWN[:24] not in path.read_bytes()
    status, err = error(lambda: s3.get_object(Bucket=b, Key="c/single", **ssec()))
    assert (status, err["Code"]) == (403, "InvalidObjectState")
    for k in bodies:
        assert restore(s3, k, tier="Expedited", bucket=b) == 202  # no key needed

    def all_restored() -> bool:
        return all((s3.head_object(Bucket=b, Key=k, **ssec()).get("Restore") or "")
                   .startswith('ongoing-request="false"') for k in bodies)

    wait_for(all_restored, what="SSE-C restores")
    for k in bodies:  # the restored copies are on standard nodes
        copy = arch.manifest(b, k).restore["parts"]
        assert copy and all(set(p["nodes"]).isdisjoint(ARCHIVE_NODES) for p in copy)
    for k, data in bodies.items():
        g = s3.get_object(Bucket=b, Key=k, **ssec())
        assert g["Body"].read() == data and g["StorageClass"] == "GLACIER"
        assert g["SSECustomerKeyMD5"] == heads[k]["SSECustomerKeyMD5"]
    got = s3.get_object(Bucket=b, Key="c/multi", Range="bytes=5242870-5242889", **ssec())
    assert got["Body"].read() == bodies["c/multi"][5242870:5242890]
    status, err = error(lambda: s3.get_object(Bucket=b, Key="c/single"))
    assert (status, err["Code"]) == (400, "InvalidRequest")
    status, err = error(lambda: s3.get_object(Bucket=b, Key="c/single",
                                              **ssec(bytes(32))))
    assert (status, err["Code"]) == (403, "AccessDenied")


def test_rotation_rewraps_a_restored_copys_key(arch: LocalCluster) -> None:
    """A restored copy has its own data key: key rotation rewraps it like the version's."""
    name = f"rot-{os.urandom(4).hex()}"
    admin_request("POST", "/tenants", {"name": name}, env=arch.env)
    cred = admin_request("POST", "/keys", {"tenant": name}, env=arch.env)
    s3 = boto3.client("s3", endpoint_url=arch.endpoint, region_name="us-east-1",
                      aws_access_key_id=cred["access_key_id"],
                      aws_secret_access_key=cred["secret_access_key"], config=no_retries())
    s3.create_bucket(Bucket=name)
    data = random.Random(11).randbytes(200_000)
    s3.put_object(Bucket=name, Key="cold", Body=data, StorageClass="GLACIER")
    assert restore(s3, "cold", tier="Expedited", days=5, bucket=name) == 202
    wait_for(lambda: restored(s3, "cold", bucket=name), what="restore")
    before = arch.manifest(name, "cold")
    assert before.restore["dek"] and before.restore["kek_version"] == before.kek_version == 1
    rotated = admin_request("POST", f"/tenants/{name}/rotate-key", {}, env=arch.env)
    assert rotated["kek_version"] == 2
    wait_for(lambda: not admin_request("GET", f"/tenants/{name}", env=arch.env)[
        "rewrap_pending"], "rewrap", timeout=60)
    after = arch.manifest(name, "cold")
    assert after.kek_version == 2 and after.restore["kek_version"] == 2
    assert after.restore["dek"] != before.restore["dek"]
    assert after.restore["parts"] == before.restore["parts"]  # no data was rewritten
    assert s3.get_object(Bucket=name, Key="cold")["Body"].read() == data


def test_archive_and_lifecycle_against_a_model(arch: LocalCluster, s3: Any) -> None:
    """Writes, copies, restores, reads and lifecycle steps against a model (last in the
    module: its lifecycle steps shorten the day cluster-wide while they run); a long run:
    ARCHIVE_MODEL_EXAMPLES=50 ARCHIVE_MODEL_STEPS=40 python -m pytest -q -k model ..."""
    run_model(arch, s3)
