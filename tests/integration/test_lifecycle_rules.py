"""Bucket lifecycle rules on a real cluster, with boto3.

One cluster for the module, started with real 86400-second days (and the default hour between
lifecycle passes). Header tests run with those days, the rest switch the running cluster to
1-second days with `tessera config set lifecycle.day_seconds` (no restart): that the worker
then applies rules within seconds is itself the proof that the change takes effect live.
Every wait polls a condition with a deadline; objects that must survive are written before
the one that must go, so they are due no later and were judged in the same pass.
"""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ops.admincli import admin_request
from tests.integration.cluster import LocalCluster, wait_for

SHORT_DAY = 1.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("lifecycle")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def s3(cluster: LocalCluster) -> Any:
    return cluster.client()


def tessera_config(c: LocalCluster, *args: str) -> str:
    env = {**os.environ, **c.env}
    out = subprocess.run([sys.executable, "-m", "ops.cli", "config", *args], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def real_days(cluster: LocalCluster) -> None:
    r = admin_request("DELETE", "/config/lifecycle.day_seconds", env=cluster.env)
    assert r["settings"]["lifecycle.day_seconds"]["value"] == 86400


@pytest.fixture
def short_days(cluster: LocalCluster) -> None:
    r = admin_request("PUT", "/config/lifecycle.day_seconds", {"value": SHORT_DAY},
                      env=cluster.env)
    assert r["settings"]["lifecycle.day_seconds"] == {
        "value": SHORT_DAY, "configured": 86400, "override": SHORT_DAY}



def lifecycle(s3: Any, bucket: str, *rules: dict[str, Any]) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                          LifecycleConfiguration={"Rules": list(rules)})


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def versions(s3: Any, bucket: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    r = s3.list_object_versions(Bucket=bucket)
    return r.get("Versions", []), r.get("DeleteMarkers", [])


def next_midnight(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(math.ceil(ts / 86400) * 86400, datetime.UTC)


def expiry(headers: dict[str, str]) -> tuple[datetime.datetime, str]:
    value = headers["x-amz-expiration"]
    date, rule = value.split('", rule-id="')
    assert date.startswith('expiry-date="') and rule.endswith('"')
    when = datetime.datetime.strptime(date[13:], "%a, %d %b %Y %H:%M:%S GMT")
    return when.replace(tzinfo=datetime.UTC), rule[:-1]


def test_expiration_and_abort_headers(cluster: LocalCluster, s3: Any, real_days: None) -> None:
    s3.create_bucket(Bucket="hdr")
    lifecycle(s3, "hdr",
              {"ID": "expire tagged", "Status": "Enabled", "Expiration": {"Days": 1},
               "Filter": {"And": {"Prefix": "e/", "Tags": [{"Key": "k", "Value": "v"}]}}},
              {"ID": "later", "Status": "Enabled", "Expiration": {"Days": 5},
               "Filter": {"Prefix": "e/"}},
              {"ID": "abort-mpu", "Status": "Enabled", "Filter": {"Prefix": "mpu/"},
               "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}})
    put = s3.put_object(Bucket="hdr", Key="e/x", Body=b"x", Tagging="k=v")
    lm = s3.head_object(Bucket="hdr", Key="e/x")["LastModified"].timestamp()
    want = (next_midnight(lm + 86400), "expire%20tagged")  # the earliest rule, id URL-encoded
    for r in (put, s3.head_object(Bucket="hdr", Key="e/x"),
              s3.get_object(Bucket="hdr", Key="e/x")):
        assert expiry(r["ResponseMetadata"]["HTTPHeaders"]) == want
    plain = s3.put_object(Bucket="hdr", Key="e/plain", Body=b"x")  # only the 5-day rule
    assert expiry(plain["ResponseMetadata"]["HTTPHeaders"])[1] == "later"
    other = s3.put_object(Bucket="hdr", Key="other", Body=b"x", Tagging="k=v")
    assert "x-amz-expiration" not in other["ResponseMetadata"]["HTTPHeaders"]
    copy = s3.copy_object(Bucket="hdr", Key="e/copy", CopySource={"Bucket": "hdr", "Key": "e/x"})
    assert expiry(copy["ResponseMetadata"]["HTTPHeaders"])[1] == "expire%20tagged"

    up = s3.create_multipart_upload(Bucket="hdr", Key="mpu/a")
    started = next(u["Initiated"] for u in s3.list_multipart_uploads(Bucket="hdr")["Uploads"]
                   if u["UploadId"] == up["UploadId"]).timestamp()
    assert up["AbortRuleId"] == "abort-mpu"
    assert up["AbortDate"] == next_midnight(started + 2 * 86400)
    part = s3.upload_part(Bucket="hdr", Key="mpu/a", UploadId=up["UploadId"], PartNumber=1,
                          Body=b"p" * 100)
    listed = s3.list_parts(Bucket="hdr", Key="mpu/a", UploadId=up["UploadId"])
    assert (listed["AbortDate"], listed["AbortRuleId"]) == (up["AbortDate"], "abort-mpu")
    done = s3.complete_multipart_upload(
        Bucket="hdr", Key="mpu/a", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert "Expiration" not in done  # no Expiration rule selects mpu/
    other_up = s3.create_multipart_upload(Bucket="hdr", Key="e/mp", Tagging="k=v")
    assert "AbortDate" not in other_up and "AbortRuleId" not in other_up
    part = s3.upload_part(Bucket="hdr", Key="e/mp", UploadId=other_up["UploadId"],
                          PartNumber=1, Body=b"p")
    done = s3.complete_multipart_upload(
        Bucket="hdr", Key="e/mp", UploadId=other_up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["Expiration"].endswith('rule-id="expire%20tagged"')

    # a shortened day speeds the worker up; the headers keep S3's calendar dates (midnight UTC
    # after N real days), as AWS defines them and the suite checks
    out = tessera_config(cluster, "set", "lifecycle.day_seconds", "60")
    assert out.startswith("lifecycle.day_seconds = 60  (override; configured 86400)")
    assert expiry(s3.head_object(Bucket="hdr", Key="e/x")["ResponseMetadata"]["HTTPHeaders"]) \
        == want
    listed = s3.list_parts(Bucket="hdr", Key="mpu/b",
                           UploadId=s3.create_multipart_upload(Bucket="hdr",
                                                               Key="mpu/b")["UploadId"])
    assert listed["AbortDate"].timestamp() % 86400 == 0


def test_no_expiration_header_for_a_named_version(s3: Any, real_days: None) -> None:
    """GET/HEAD with versionId carry no x-amz-expiration, even for the current version: the
    header describes the current object's Expiration, reported only when no version is named
    (what MinIO and Ceph RGW settled on as S3's behaviour)."""
    s3.create_bucket(Bucket="hdrv")
    s3.put_bucket_versioning(Bucket="hdrv", VersioningConfiguration={"Status": "Enabled"})
    lifecycle(s3, "hdrv", {"ID": "e", "Status": "Enabled", "Filter": {},
                           "Expiration": {"Days": 3},
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    old = s3.put_object(Bucket="hdrv", Key="k", Body=b"1")["VersionId"]
    cur = s3.put_object(Bucket="hdrv", Key="k", Body=b"2")["VersionId"]
    assert "x-amz-expiration" in s3.head_object(Bucket="hdrv", Key="k")[
        "ResponseMetadata"]["HTTPHeaders"]
    for vid in (cur, old):
        for call in (s3.head_object, s3.get_object):
            got = call(Bucket="hdrv", Key="k", VersionId=vid)["ResponseMetadata"]["HTTPHeaders"]
            assert "x-amz-expiration" not in got, (call, vid)


def test_filters_select_what_they_state(s3: Any, short_days: None) -> None:
    s3.create_bucket(Bucket="flt")
    # the survivors are older than the one that goes: due no later, judged in the same pass
    for key, size, tags in (("f/small", 5, "k=v"), ("f/big", 200, "k=v"),
                            ("f/untagged", 50, ""), ("f/wrongtag", 50, "k=w"),
                            ("g/match", 50, "k=v"), ("f/match", 50, "k=v&other=1")):
        s3.put_object(Bucket="flt", Key=key, Body=b"x" * size, Tagging=tags)
    lifecycle(s3, "flt", {"ID": "and", "Status": "Enabled", "Expiration": {"Days": 1},
                          "Filter": {"And": {"Prefix": "f/", "Tags": [{"Key": "k", "Value": "v"}],
                                             "ObjectSizeGreaterThan": 10,
                                             "ObjectSizeLessThan": 100}}})
    wait_for(lambda: "f/match" not in keys(s3, "flt"), "f/match to expire")
    assert keys(s3, "flt") == {"f/small", "f/big", "f/untagged", "f/wrongtag", "g/match"}

    s3.create_bucket(Bucket="flt1")
    for key, size in (("a", 5), ("b", 500)):
        s3.put_object(Bucket="flt1", Key=key, Body=b"x" * size)
    lifecycle(s3, "flt1", {"ID": "gt", "Status": "Enabled", "Expiration": {"Days": 1},
                           "Filter": {"ObjectSizeGreaterThan": 100}})
    wait_for(lambda: keys(s3, "flt1") == {"a"}, "the object over 100 bytes to expire")


def test_refusals_are_aws_errors(s3: Any) -> None:
    s3.create_bucket(Bucket="bad")
    cases = [
        ({"Prefix": "a/", "Tag": {"Key": "k", "Value": "v"}}, "MalformedXML"),  # And needed
        ({"And": {"Prefix": "a/"}}, "MalformedXML"),
        ({"And": {"ObjectSizeGreaterThan": 9, "ObjectSizeLessThan": 9}}, "InvalidArgument"),
        ({"And": {"Tags": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]}},
         "InvalidRequest"),
    ]
    for flt, code in cases:
        with pytest.raises(ClientError) as ei:
            lifecycle(s3, "bad", {"ID": "r", "Status": "Enabled", "Filter": flt,
                                  "Expiration": {"Days": 1}})
        assert ei.value.response["Error"]["Code"] == code, flt
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as ei:
        lifecycle(s3, "bad", {"ID": "r", "Status": "Enabled", "Filter": {},
                              "Expiration": {"Days": 0}})
    assert ei.value.response["Error"]["Code"] == "InvalidArgument"


def test_transition_refusals_are_aws_errors(s3: Any) -> None:
    """AWS: an IA class needs Days >= 30 (objects stay 30 days in S3 first); a rule moves
    to each class once, by Days or by Date, each colder class later; an expiration comes
    after the transitions it would pre-empt (the messages name the rule's filter); STANDARD
    is no transition target (not in the schema's enum)."""
    s3.create_bucket(Bucket="badtr")
    cases = [
        ({"Transitions": [{"Days": 29, "StorageClass": "STANDARD_IA"}]}, "InvalidArgument",
         "'Days' in Transition action must be greater than or equal to 30 for storageClass "
         "'STANDARD_IA'"),
        ({"NoncurrentVersionTransitions": [{"NoncurrentDays": 1,
                                            "StorageClass": "ONEZONE_IA"}]},
         "InvalidArgument", "'NoncurrentDays' in NoncurrentVersionTransition action must be "
         "greater than or equal to 30 for storageClass 'ONEZONE_IA'"),
        ({"Transitions": [{"Days": 1, "StorageClass": "GLACIER"},
                          {"Days": 9, "StorageClass": "GLACIER"}]}, "InvalidRequest",
         "'StorageClass' must be different for 'Transition' actions in same 'Rule' with "
         "filter '(prefix=)'"),
        ({"Expiration": {"Days": 5}, "Transitions": [{"Days": 5, "StorageClass": "GLACIER"}]},
         "InvalidArgument", "'Days' in the Expiration action for filter '(prefix=)' must be "
         "greater than 'Days' in the Transition action"),
        ({"NoncurrentVersionExpiration": {"NoncurrentDays": 2},
          "NoncurrentVersionTransitions": [{"NoncurrentDays": 3, "StorageClass": "GLACIER"}]},
         "InvalidArgument", "'NoncurrentDays' in the NoncurrentVersionExpiration action for "
         "filter '(prefix=)' must be greater than 'NoncurrentDays' in the "
         "NoncurrentVersionTransition action"),
        ({"Transitions": [{"Days": 1, "StorageClass": "STANDARD"}]}, "MalformedXML", None),
        ({"Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"},
                          {"Days": 0, "StorageClass": "GLACIER_IR"}]}, "InvalidArgument",
         "'Days' in the Transition action for StorageClass 'GLACIER_IR' for filter '(prefix=)' "
         "must be greater than 'Days' in the Transition action for StorageClass 'STANDARD_IA' "
         "for filter '(prefix=)'"),
        ({"Transitions": [{"Days": 1, "StorageClass": "GLACIER"},
                          {"Date": datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
                           "StorageClass": "DEEP_ARCHIVE"}]}, "InvalidRequest",
         "Found mixed 'Date' and 'Days' based Transition actions in lifecycle rule for filter "
         "'(prefix=)'"),
        ({"Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"},
                          {"Days": 60, "StorageClass": "GLACIER_IR"},
                          {"Days": 90, "StorageClass": "DEEP_ARCHIVE"}]}, "InvalidArgument",
         "Days in the Transition action for StorageClass DEEP_ARCHIVE must be 90 days more "
         "than Transition for StorageClass GLACIER_IR"),
    ]
    for actions, code, message in cases:
        with pytest.raises(ClientError) as ei:
            lifecycle(s3, "badtr", {"ID": "r", "Status": "Enabled", "Filter": {}, **actions})
        err = ei.value.response["Error"]
        assert (err["Code"], ei.value.response["ResponseMetadata"]["HTTPStatusCode"]) == \
            (code, 400), actions
        assert message is None or err["Message"] == message
    with pytest.raises(ClientError) as ei:
        lifecycle(s3, "badtr", {"ID": "r", "Status": "Enabled", "Filter": {"And": {
            "Prefix": "p/", "Tags": [{"Key": "k", "Value": "v"}],
            "ObjectSizeGreaterThan": 10}}, "Expiration": {"Days": 1},
            "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]})
    assert "for filter '(prefix=p/ and tag={key=k, value=v} and objectsizegreaterthan=10)'" \
        in ei.value.response["Error"]["Message"]
    lifecycle(s3, "badtr", {"ID": "ok", "Status": "Enabled", "Filter": {}, "Transitions": [
        {"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 90, "StorageClass": "GLACIER_IR"},
        {"Days": 60, "StorageClass": "INTELLIGENT_TIERING"}], "Expiration": {"Days": 91}},
        {"ID": "zero", "Status": "Enabled", "Filter": {"Prefix": "z/"}, "Transitions": [
            {"Days": 0, "StorageClass": "GLACIER_IR"}]})


def test_day_seconds_is_bounded(cluster: LocalCluster) -> None:
    """The day knob only shortens days: above a real day (86400 s) is refused, with the range."""
    env = {**os.environ, **cluster.env}
    out = subprocess.run([sys.executable, "-m", "ops.cli", "config", "set",
                          "lifecycle.day_seconds", "86401"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "must be between 0.1 and 86400 s (a real day), got 86401" in out.stderr
    assert "86400" in tessera_config(cluster, "set", "lifecycle.day_seconds", "86400")


def test_transition_default_minimum_object_size(s3: Any) -> None:
    s3.create_bucket(Bucket="minsize")
    rule = {"ID": "r", "Status": "Enabled", "Filter": {},
            "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}
    put = s3.put_bucket_lifecycle_configuration(Bucket="minsize",
                                                LifecycleConfiguration={"Rules": [rule]})
    assert put["TransitionDefaultMinimumObjectSize"] == "varies_by_storage_class"
    put = s3.put_bucket_lifecycle_configuration(
        Bucket="minsize", LifecycleConfiguration={"Rules": [rule]},
        TransitionDefaultMinimumObjectSize="all_storage_classes_128K")
    assert put["TransitionDefaultMinimumObjectSize"] == "all_storage_classes_128K"
    got = s3.get_bucket_lifecycle_configuration(Bucket="minsize")
    assert got["TransitionDefaultMinimumObjectSize"] == "all_storage_classes_128K"
    with pytest.raises(ClientError) as ei:
        s3.put_bucket_lifecycle_configuration(
            Bucket="minsize", LifecycleConfiguration={"Rules": [rule]},
            TransitionDefaultMinimumObjectSize="tiny")
    assert ei.value.response["Error"]["Code"] == "InvalidArgument"


def test_newer_noncurrent_versions_kept(s3: Any, short_days: None) -> None:
    s3.create_bucket(Bucket="nvr")
    s3.put_bucket_versioning(Bucket="nvr", VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket="nvr", Key="k", Body=f"v{i}".encode())["VersionId"]
           for i in range(6)]
    lifecycle(s3, "nvr", {"ID": "nv", "Status": "Enabled", "Filter": {},
                         "NoncurrentVersionExpiration": {"NoncurrentDays": 1,
                                                         "NewerNoncurrentVersions": 2}})
    wait_for(lambda: len(versions(s3, "nvr")[0]) == 3, "3 noncurrent versions to expire")
    assert {v["VersionId"] for v in versions(s3, "nvr")[0]} == set(ids[3:])


def test_delete_markers_cleaned(s3: Any, short_days: None) -> None:
    s3.create_bucket(Bucket="dmk")
    s3.put_bucket_versioning(Bucket="dmk", VersioningConfiguration={"Status": "Enabled"})
    for key in ("keep/a", "eodm/a", "days/a"):
        s3.put_object(Bucket="dmk", Key=key, Body=b"x")
        s3.delete_object(Bucket="dmk", Key=key)
    nc = {"NoncurrentVersionExpiration": {"NoncurrentDays": 1}}
    lifecycle(s3, "dmk",
              {"ID": "eodm", "Status": "Enabled", "Filter": {"Prefix": "eodm/"}, **nc,
               "Expiration": {"ExpiredObjectDeleteMarker": True}},
              {"ID": "days", "Status": "Enabled", "Filter": {"Prefix": "days/"}, **nc,
               "Expiration": {"Days": 2}},
              {"ID": "keep", "Status": "Enabled", "Filter": {"Prefix": "keep/"}, **nc})

    def gone() -> bool:
        vs, dms = versions(s3, "dmk")
        return not any(o["Key"] != "keep/a" for o in vs + dms)

    wait_for(gone, "both expired object delete markers to be removed")
    vs, dms = versions(s3, "dmk")  # keep/a lost its version; its marker stays (no rule says)
    assert not vs and [m["Key"] for m in dms] == ["keep/a"]


def test_incomplete_uploads_aborted(s3: Any, short_days: None) -> None:
    s3.create_bucket(Bucket="mpu")
    kept = s3.create_multipart_upload(Bucket="mpu", Key="keep/b")["UploadId"]
    s3.create_multipart_upload(Bucket="mpu", Key="tmp/a")
    lifecycle(s3, "mpu", {"ID": "abort", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
                          "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}})
    wait_for(lambda: [u["UploadId"] for u in
                      s3.list_multipart_uploads(Bucket="mpu").get("Uploads", [])] == [kept],
             "the tmp/ upload to be aborted")


def test_locked_versions_are_not_expired(s3: Any, short_days: None) -> None:
    s3.create_bucket(Bucket="lck", ObjectLockEnabledForBucket=True)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    locked = s3.put_object(Bucket="lck", Key="a", Body=b"1", ObjectLockMode="GOVERNANCE",
                           ObjectLockRetainUntilDate=until)["VersionId"]
    held = s3.put_object(Bucket="lck", Key="a", Body=b"2", ObjectLockLegalHoldStatus="ON",
                         )["VersionId"]
    s3.put_object(Bucket="lck", Key="a", Body=b"3")
    s3.put_object(Bucket="lck", Key="b", Body=b"1")
    s3.put_object(Bucket="lck", Key="b", Body=b"2")
    lifecycle(s3, "lck", {"ID": "nc", "Status": "Enabled", "Filter": {},
                          "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    wait_for(lambda: sum(v["Key"] == "b" for v in versions(s3, "lck")[0]) == 1,
             "b's unlocked noncurrent version to expire")
    a = {v["VersionId"] for v in versions(s3, "lck")[0] if v["Key"] == "a"}
    assert {locked, held} <= a and len(a) == 3


def test_transition_to_readable_classes(s3: Any, short_days: None) -> None:
    """INTELLIGENT_TIERING, then GLACIER_IR (down AWS's waterfall): the object moves and stays
    readable without a restore. A small one stays STANDARD (AWS's 128 KiB transition minimum
    for these classes), as does everything once a rule names only a warmer class."""
    s3.create_bucket(Bucket="warm")
    big = os.urandom(200 * 1024)
    s3.put_object(Bucket="warm", Key="t/small", Body=b"x" * 100)
    s3.put_object(Bucket="warm", Key="t/big", Body=big)
    lifecycle(s3, "warm", {"ID": "tier", "Status": "Enabled", "Filter": {"Prefix": "t/"},
                           "Transitions": [{"Days": 1, "StorageClass": "INTELLIGENT_TIERING"},
                                           {"Days": 3, "StorageClass": "GLACIER_IR"}]})

    def classes() -> dict[str, str]:
        return {o["Key"]: o["StorageClass"]
                for o in s3.list_objects_v2(Bucket="warm").get("Contents", [])}

    wait_for(lambda: classes()["t/big"] == "GLACIER_IR", "t/big to reach GLACIER_IR")
    assert classes() == {"t/small": "STANDARD", "t/big": "GLACIER_IR"}
    got = s3.get_object(Bucket="warm", Key="t/big")
    assert got["StorageClass"] == "GLACIER_IR" and got["Body"].read() == big
