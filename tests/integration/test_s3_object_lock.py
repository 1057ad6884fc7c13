"""Object Lock through boto3: bucket configuration, retention, legal hold, refusals, shred."""

from __future__ import annotations

import datetime
import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from ops.admincli import CliError, admin_request
from tests.integration.cluster import LocalCluster
from tests.integration.test_tenants import s3_for, tessera

UTC = datetime.UTC
FAR = datetime.datetime(2100, 1, 1, tzinfo=UTC)


def _err(call, *args, **kw) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def _locked_bucket(s3, name: str) -> str:
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_bucket_configuration(s3) -> None:
    plain = "lock-plain"
    s3.create_bucket(Bucket=plain)
    conf = {"ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
    assert _err(s3.get_object_lock_configuration, Bucket=plain) == (
        404, "ObjectLockConfigurationNotFoundError")
    # Needs versioning Enabled (not absent, not Suspended) to be added later.
    assert _err(s3.put_object_lock_configuration, Bucket=plain,
                ObjectLockConfiguration=conf) == (409, "InvalidBucketState")
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=plain)["Status"] == "Suspended"
    assert _err(s3.put_object_lock_configuration, Bucket=plain,
                ObjectLockConfiguration=conf) == (409, "InvalidBucketState")
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=plain, ObjectLockConfiguration=conf)
    assert s3.get_object_lock_configuration(Bucket=plain)["ObjectLockConfiguration"] == conf

    b = _locked_bucket(s3, "lock-conf")
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    assert s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled"}
    assert _err(s3.put_bucket_versioning, Bucket=b,
                VersioningConfiguration={"Status": "Suspended"}) == (409, "InvalidBucketState")
    bad = [({"Mode": "GOVERNANCE", "Days": 1, "Years": 1}, "MalformedXML"),
           ({"Mode": "governance", "Days": 1}, "MalformedXML"),
           ({"Mode": "GOVERNANCE", "Days": 0}, "InvalidRetentionPeriod"),
           ({"Mode": "COMPLIANCE", "Years": -1}, "InvalidRetentionPeriod")]
    for retention, code in bad:
        assert _err(s3.put_object_lock_configuration, Bucket=b, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": retention}}) == (400, code)


def test_retention_rules(s3) -> None:
    b = _locked_bucket(s3, "lock-retention")
    vid = s3.put_object(Bucket=b, Key="k", Body=b"x")["VersionId"]
    assert _err(s3.get_object_retention, Bucket=b, Key="k") == (
        404, "NoSuchObjectLockConfiguration")
    until = datetime.datetime(2090, 1, 3, tzinfo=UTC)
    s3.put_object_retention(Bucket=b, Key="k", Retention={"Mode": "GOVERNANCE",
                                                          "RetainUntilDate": until})
    assert s3.get_object_retention(Bucket=b, Key="k")["Retention"] == {
        "Mode": "GOVERNANCE", "RetainUntilDate": until}
    head = s3.head_object(Bucket=b, Key="k")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("GOVERNANCE", until)
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": until - datetime.timedelta(days=1)}
    assert _err(s3.put_object_retention, Bucket=b, Key="k", Retention=shorter) == (
        403, "AccessDenied")
    compliance = {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    assert _err(s3.put_object_retention, Bucket=b, Key="k", Retention=compliance) == (
        403, "AccessDenied")
    assert _err(s3.delete_object, Bucket=b, Key="k", VersionId=vid) == (403, "AccessDenied")
    # A delete marker can always be added.
    assert s3.delete_object(Bucket=b, Key="k")["DeleteMarker"] is True
    s3.put_object_retention(Bucket=b, Key="k", VersionId=vid, Retention=shorter,
                            BypassGovernanceRetention=True)
    s3.put_object_retention(Bucket=b, Key="k", VersionId=vid, Retention=compliance,
                            BypassGovernanceRetention=True)
    # COMPLIANCE: nobody shortens it or deletes the version, bypass or not.
    assert _err(s3.put_object_retention, Bucket=b, Key="k", VersionId=vid,
                Retention=shorter, BypassGovernanceRetention=True) == (403, "AccessDenied")
    assert _err(s3.delete_object, Bucket=b, Key="k", VersionId=vid,
                BypassGovernanceRetention=True) == (403, "AccessDenied")
    past = {"Mode": "COMPLIANCE", "RetainUntilDate": datetime.datetime(2001, 1, 1, tzinfo=UTC)}
    assert _err(s3.put_object_retention, Bucket=b, Key="k", VersionId=vid,
                Retention=past)[1] == "InvalidArgument"
    plain = "lock-none"
    s3.create_bucket(Bucket=plain)
    s3.put_object(Bucket=plain, Key="k", Body=b"x")
    assert _err(s3.put_object_retention, Bucket=plain, Key="k",
                Retention=compliance) == (400, "InvalidRequest")
    assert _err(s3.put_object, Bucket=plain, Key="j", Body=b"x", ObjectLockMode="GOVERNANCE",
                ObjectLockRetainUntilDate=FAR) == (400, "InvalidRequest")


def test_headers_default_retention_and_legal_hold(s3) -> None:
    b = _locked_bucket(s3, "lock-headers")
    r = s3.put_object(Bucket=b, Key="p", Body=b"x", ObjectLockMode="GOVERNANCE",
                      ObjectLockRetainUntilDate=FAR, ObjectLockLegalHoldStatus="ON")
    head = s3.head_object(Bucket=b, Key="p")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"],
            head["ObjectLockLegalHoldStatus"]) == ("GOVERNANCE", FAR, "ON")
    # A legal hold refuses deletion even with the bypass; removing it lets bypass through.
    assert _err(s3.delete_object, Bucket=b, Key="p", VersionId=r["VersionId"],
                BypassGovernanceRetention=True) == (403, "AccessDenied")
    s3.put_object_legal_hold(Bucket=b, Key="p", LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=b, Key="p")["LegalHold"] == {"Status": "OFF"}
    s3.delete_object(Bucket=b, Key="p", VersionId=r["VersionId"], BypassGovernanceRetention=True)
    assert _err(s3.put_object, Bucket=b, Key="q", Body=b"x",
                ObjectLockMode="GOVERNANCE")[1] == "InvalidArgument"
    # Default retention applies to PUT, COPY and multipart uploads.
    s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}})
    before = datetime.datetime.now(UTC)
    s3.put_object(Bucket=b, Key="d", Body=b"x")
    s3.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "d"})
    up = s3.create_multipart_upload(Bucket=b, Key="m", ObjectLockLegalHoldStatus="ON")
    etag = s3.upload_part(Bucket=b, Key="m", UploadId=up["UploadId"], PartNumber=1,
                          Body=b"y")["ETag"]
    done = s3.complete_multipart_upload(Bucket=b, Key="m", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": [{"ETag": etag,
                                                                    "PartNumber": 1}]})
    for key in ("d", "c", "m"):
        head = s3.head_object(Bucket=b, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        left = head["ObjectLockRetainUntilDate"] - before
        assert datetime.timedelta(days=2) <= left < datetime.timedelta(days=2, minutes=5)
    assert s3.head_object(Bucket=b, Key="m")["ObjectLockLegalHoldStatus"] == "ON"
    # DeleteObjects: per key AccessDenied, the rest deleted.
    d_vid = s3.head_object(Bucket=b, Key="d")["VersionId"]
    res = s3.delete_objects(Bucket=b, Delete={"Objects": [
        {"Key": "d", "VersionId": d_vid}, {"Key": "m", "VersionId": done["VersionId"]}]},
        BypassGovernanceRetention=True)
    assert [d["Key"] for d in res["Deleted"]] == ["d"]
    assert [(e["Key"], e["Code"]) for e in res["Errors"]] == [("m", "AccessDenied")]


def test_shred_waits_for_compliance_retention(cluster: LocalCluster) -> None:
    """A tenant holding COMPLIANCE-locked versions cannot be shredded before they expire."""
    name = f"locked-{uuid.uuid4().hex[:8]}"
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    cred = json.loads(tessera(cluster, "key", "create", "--tenant", name, "--json").stdout)
    s3 = s3_for(cluster, cred["access_key_id"], cred["secret_access_key"])
    b = _locked_bucket(s3, f"{name}-b")
    until = datetime.datetime.now(UTC) + datetime.timedelta(seconds=4)
    s3.put_object(Bucket=b, Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=until)
    with pytest.raises(CliError) as e:
        admin_request("POST", f"/tenants/{name}/shred", {"confirm": name, "wait_s": 0},
                      env=cluster.env)
    assert "COMPLIANCE" in str(e.value)
    assert admin_request("GET", f"/tenants/{name}", env=cluster.env)["state"] == "active"
    while datetime.datetime.now(UTC) <= until:
        time.sleep(0.2)  # waiting out the retention itself, not synchronizing
    shred = admin_request("POST", f"/tenants/{name}/shred", {"confirm": name, "wait_s": 0},
                          env=cluster.env)
    assert shred["state"] == "shredded"



def test_shred_cli_governance_needs_the_override(cluster: LocalCluster) -> None:
    """`tessera tenant shred` refuses a tenant holding GOVERNANCE-locked versions unless
    told `--bypass-governance-retention`, and one holding a legal hold even then."""
    name = f"gov-{uuid.uuid4().hex[:8]}"
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    cred = json.loads(tessera(cluster, "key", "create", "--tenant", name, "--json").stdout)
    s3 = s3_for(cluster, cred["access_key_id"], cred["secret_access_key"])
    b = _locked_bucket(s3, f"{name}-b")
    vid = s3.put_object(Bucket=b, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=FAR, ObjectLockLegalHoldStatus="ON",
                        )["VersionId"]
    shred = ("tenant", "shred", name, "--confirm", name, "--wait", "0")
    for extra in ((), ("--bypass-governance-retention",)):
        r = tessera(cluster, *shred, *extra)
        assert r.returncode != 0 and "legal hold" in r.stderr, r
    s3.put_object_legal_hold(Bucket=b, Key="k", VersionId=vid, LegalHold={"Status": "OFF"})
    r = tessera(cluster, *shred)
    assert r.returncode != 0 and "GOVERNANCE" in r.stderr, r
    assert admin_request("GET", f"/tenants/{name}", env=cluster.env)["state"] == "active"
    r = tessera(cluster, *shred, "--bypass-governance-retention")
    assert r.returncode == 0, r.stderr
    assert admin_request("GET", f"/tenants/{name}", env=cluster.env)["state"] == "shredded"

def test_locked_put_needs_content_md5_or_checksum(cluster: LocalCluster, s3) -> None:
    """PutObject with Object Lock parameters, or into a bucket with default retention, is
    400 InvalidRequest without Content-MD5 or an x-amz-checksum-*, as AWS answers."""
    bare = cluster.client(request_checksum_calculation="when_required")  # sends neither
    b = _locked_bucket(s3, "lock-md5")
    message = ("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object "
               "requests with Object Lock parameters")
    lock_args = [{"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": FAR},
                 {"ObjectLockLegalHoldStatus": "ON"}]
    for args in lock_args:
        with pytest.raises(ClientError) as e:
            bare.put_object(Bucket=b, Key="k", Body=b"data", **args)
        r = e.value.response
        assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"],
                r["Error"]["Message"]) == (400, "InvalidRequest", message)
    assert "Versions" not in s3.list_object_versions(Bucket=b)
    # Without lock parameters and without a default retention, nothing is required.
    bare.put_object(Bucket=b, Key="plain", Body=b"data")
    # Content-MD5, or a checksum (header, or the trailer boto3 sends by default), satisfies it.
    bare.put_object(Bucket=b, Key="md5", Body=b"data", ContentMD5="jXd/OF09/siBXSD3SWAm3A==",
                    ObjectLockLegalHoldStatus="ON")
    bare.put_object(Bucket=b, Key="sha", Body=b"data", ChecksumAlgorithm="SHA256",
                    **lock_args[0])
    s3.put_object(Bucket=b, Key="crc", Body=b"data", **lock_args[0])
    # A bucket's default retention makes every PUT into it one with Object Lock parameters.
    s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    assert _err(bare.put_object, Bucket=b, Key="default", Body=b"data") == (
        400, "InvalidRequest")
    s3.put_object(Bucket=b, Key="default", Body=b"data")
    assert s3.head_object(Bucket=b, Key="default")["ObjectLockMode"] == "GOVERNANCE"


def test_locked_upload_part_needs_content_md5_or_checksum(cluster: LocalCluster, s3) -> None:
    """UploadPart of an upload created with Object Lock parameters, or into a bucket with a
    default retention, is refused as PutObject is without Content-MD5 or an x-amz-checksum-*
    (AWS's UploadPart: Content-MD5 "is required if object lock parameters are specified");
    it was stored (main at 6ea6581), so a locked object's bytes went in unchecked."""
    bare = cluster.client(request_checksum_calculation="when_required")  # sends neither
    b = _locked_bucket(s3, f"lock-part-{uuid.uuid4().hex[:8]}")
    # AWS's own words for a part ("Put Part"), as its clients' bug reports quote them
    # (aws-sdk-java#2851, google/go-cloud#3249, s3tools/s3cmd#1436)
    message = ("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Part "
               "requests with Object Lock parameters")
    held = s3.create_multipart_upload(Bucket=b, Key="held", ObjectLockLegalHoldStatus="ON")
    plain = s3.create_multipart_upload(Bucket=b, Key="plain")
    for up in (held, plain):
        up["args"] = {"Bucket": b, "Key": up["Key"], "UploadId": up["UploadId"]}
    with pytest.raises(ClientError) as e:
        bare.upload_part(**held["args"], PartNumber=1, Body=b"data")
    r = e.value.response
    assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"],
            r["Error"]["Message"]) == (400, "InvalidRequest", message)
    assert "Parts" not in s3.list_parts(**held["args"])
    bare.upload_part(**plain["args"], PartNumber=1, Body=b"data")  # no lock: nothing needed
    # Content-MD5, or a checksum (the trailer boto3 sends by default), satisfies it.
    bare.upload_part(**held["args"], PartNumber=1, Body=b"data",
                     ContentMD5="jXd/OF09/siBXSD3SWAm3A==")
    s3.upload_part(**held["args"], PartNumber=2, Body=b"data")
    # A default retention makes every part one of an object with Object Lock parameters.
    s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    assert _err(bare.upload_part, **plain["args"], PartNumber=2, Body=b"data") == (
        400, "InvalidRequest")
    for up in (held, plain):
        s3.abort_multipart_upload(**up["args"])
