"""atkpolicy21: the condition keys a bucket policy judges are the values the request
applies.

Object tags whose keys differ only in case (S3 keeps both) are all values of the one
case-insensitive condition key s3:RequestObjectTag/<key> or s3:ExistingObjectTag/<key>: the
last one alone was, so "secret=no&Secret=yes" slipped past a Deny of Secret=yes.
 s3:object-lock-retain-until-date is the instant the gateway locks the
object until, read by the one parser the write uses (a header "20990101" locked until 2099
while the condition read it as epoch seconds, 1970, so a Deny of late dates let it through);
PutObjectRetention and PutObjectLegalHold carry s3:object-lock-mode,
s3:object-lock-retain-until-date and s3:object-lock-legal-hold from their XML bodies (AWS's
Service Authorization Reference lists them for those actions; they were absent, so a Deny
on them never applied)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.integration.cluster import LocalCluster
from tests.integration.tenant_pair import new_bucket, policy, refusal, two_tenants

LIMIT = "2030-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    return two_tenants(cluster, "pav")


@contextmanager
def _until_header(client: Any, value: str) -> Iterator[None]:
    """`client`'s PutObject sends x-amz-retain-until-date as `value` (replaced after boto3's
    own serializing, before signing)."""
    def put(request: Any, **_: Any) -> None:
        del request.headers["x-amz-object-lock-retain-until-date"]  # (set appends)
        request.headers["x-amz-object-lock-retain-until-date"] = value

    client.meta.events.register("before-sign.s3.PutObject", put)
    try:
        yield
    finally:
        client.meta.events.unregister("before-sign.s3.PutObject", put)


def _late_deny(bucket: str, action: str) -> str:
    return policy({"Effect": "Deny", "Principal": "*", "Action": action,
                   "Resource": f"arn:aws:s3:::{bucket}/*",
                   "Condition": {"DateGreaterThan": {"s3:object-lock-retain-until-date": LIMIT}}})


def test_a_retain_until_header_is_judged_as_the_date_it_locks_until(
        w: dict[str, Any]) -> None:
    """"20990101" (ISO 8601 basic, which the write accepts) is 2099 to the condition too."""
    a = w["a"]
    bucket = new_bucket(w, ObjectLockEnabledForBucket=True)
    a.put_bucket_policy(Bucket=bucket, Policy=_late_deny(bucket, "s3:PutObject"))
    with _until_header(a, "20990101"):
        assert refusal(lambda: a.put_object(
            Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate=datetime(2099, 1, 1, tzinfo=UTC))) \
            == (403, "AccessDenied")
    assert "Versions" not in a.list_object_versions(Bucket=bucket)
    with _until_header(a, "20291231"):  # before the limit: written
        a.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                     ObjectLockRetainUntilDate=datetime(2029, 12, 31, tzinfo=UTC))
    head = a.head_object(Bucket=bucket, Key="k")
    assert head["ObjectLockRetainUntilDate"] == datetime(2029, 12, 31, tzinfo=UTC)


def test_put_object_retention_is_judged_on_its_body(w: dict[str, Any]) -> None:
    """A Deny of s3:PutObjectRetention past a date refuses a Retention document past it,
    and not one before it; a Deny on s3:object-lock-mode binds the document's Mode."""
    a = w["a"]
    bucket = new_bucket(w, ObjectLockEnabledForBucket=True)
    a.put_object(Bucket=bucket, Key="k", Body=b"x")
    a.put_bucket_policy(Bucket=bucket, Policy=_late_deny(bucket, "s3:PutObjectRetention"))
    late = {"Mode": "GOVERNANCE", "RetainUntilDate": datetime(2099, 1, 1, tzinfo=UTC)}
    assert refusal(lambda: a.put_object_retention(Bucket=bucket, Key="k", Retention=late)) \
        == (403, "AccessDenied")
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    a.put_object_retention(Bucket=bucket, Key="k",
                           Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})
    assert a.get_object_retention(Bucket=bucket, Key="k")["Retention"]["RetainUntilDate"] \
        == soon
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObjectRetention",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringEquals": {"s3:object-lock-mode": "COMPLIANCE"}}}))
    assert refusal(lambda: a.put_object_retention(Bucket=bucket, Key="k", Retention={
        "Mode": "COMPLIANCE", "RetainUntilDate": soon + timedelta(days=1)})) \
        == (403, "AccessDenied")
    a.put_object_retention(Bucket=bucket, Key="k", Retention={
        "Mode": "GOVERNANCE", "RetainUntilDate": soon + timedelta(days=1)})


def test_the_bypass_check_of_a_retention_change_judges_its_body(w: dict[str, Any]) -> None:
    """review21e L3: s3:BypassGovernanceRetention, checked on top of a PutObjectRetention,
    sees the Retention document's date as s3:object-lock-retain-until-date (the request's
    headers carry none): "no bypass to shorten below 2030-06-01" refuses a document for
    2030-01-01 and lets one for 2030-12-01 through."""
    a = w["a"]
    bucket = new_bucket(w, ObjectLockEnabledForBucket=True)
    a.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                 ObjectLockRetainUntilDate=datetime(2031, 1, 1, tzinfo=UTC))
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:BypassGovernanceRetention",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"DateLessThan": {"s3:object-lock-retain-until-date":
                                       "2030-06-01T00:00:00Z"}}}))

    def shorten(year: int, month: int) -> Any:
        return a.put_object_retention(
            Bucket=bucket, Key="k", BypassGovernanceRetention=True, Retention={
                "Mode": "GOVERNANCE", "RetainUntilDate": datetime(year, month, 1, tzinfo=UTC)})

    assert refusal(lambda: shorten(2030, 1)) == (403, "AccessDenied")
    shorten(2030, 12)
    assert a.get_object_retention(Bucket=bucket, Key="k")["Retention"]["RetainUntilDate"] \
        == datetime(2030, 12, 1, tzinfo=UTC)


def test_put_object_legal_hold_is_judged_on_its_body(w: dict[str, Any]) -> None:
    """A Deny of s3:PutObjectLegalHold when s3:object-lock-legal-hold is ON refuses ON and
    lets OFF through; an Allow to another tenant on the same key grants only what it names."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w, ObjectLockEnabledForBucket=True)
    a.put_object(Bucket=bucket, Key="k", Body=b"x")
    a.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObjectLegalHold",
         "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"StringEquals": {"s3:object-lock-legal-hold": "ON"}}},
        {"Effect": "Allow", "Principal": {"AWS": w["name_b"]},
         "Action": "s3:PutObjectLegalHold", "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"StringEquals": {"s3:object-lock-legal-hold": "OFF"}}}))
    for client in (a, b):
        assert refusal(lambda c=client: c.put_object_legal_hold(
            Bucket=bucket, Key="k", LegalHold={"Status": "ON"})) == (403, "AccessDenied")
        client.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "OFF"})
    assert a.get_object_legal_hold(Bucket=bucket, Key="k")["LegalHold"]["Status"] == "OFF"


def test_tags_differing_in_case_are_all_judged(w: dict[str, Any]) -> None:
    """A Deny on Secret=yes binds whichever of Secret/secret carries it, requested or
    existing, in either order."""
    a = w["a"]
    bucket = new_bucket(w)
    res = f"arn:aws:s3:::{bucket}/*"
    a.put_object(Bucket=bucket, Key="k1", Body=b"1", Tagging="Secret=yes&secret=no")
    a.put_object(Bucket=bucket, Key="k2", Body=b"2", Tagging="secret=no&Secret=yes")
    a.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": res,
         "Condition": {"StringEquals": {"s3:RequestObjectTag/Secret": "yes"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": res,
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/Secret": "yes"}}}))
    for tagging in ("Secret=yes&secret=no", "secret=no&Secret=yes"):
        assert refusal(lambda t=tagging: a.put_object(
            Bucket=bucket, Key="n", Body=b"n", Tagging=t)) == (403, "AccessDenied")
    for key in ("k1", "k2"):
        assert refusal(lambda k=key: a.get_object(Bucket=bucket, Key=k)) \
            == (403, "AccessDenied")
    a.put_object(Bucket=bucket, Key="n", Body=b"n", Tagging="secret=no&Secret=no")
    assert a.get_object(Bucket=bucket, Key="n")["Body"].read() == b"n"


def test_an_empty_encryption_header_is_refused_not_taken_as_aes256(w: dict[str, Any]) -> None:
    """A Deny of s3:PutObject when s3:x-amz-server-side-encryption is AES256 (to force
    aws:kms) held for "AES256" while an empty header was written as AES256: an empty value
    names no method and is refused, as any other unsupported one."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringEquals": {"s3:x-amz-server-side-encryption": "AES256"}}}))
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="k", Body=b"x",
                                        ServerSideEncryption="AES256")) == (403, "AccessDenied")

    def empty(request: Any, **_: Any) -> None:
        request.headers["x-amz-server-side-encryption"] = ""

    a.meta.events.register("before-sign.s3.PutObject", empty)
    try:
        assert refusal(lambda: a.put_object(Bucket=bucket, Key="k", Body=b"x")) \
            == (400, "InvalidArgument")
    finally:
        a.meta.events.unregister("before-sign.s3.PutObject", empty)
    assert "Contents" not in a.list_objects_v2(Bucket=bucket)
    a.put_object(Bucket=bucket, Key="k", Body=b"x")  # no header: the bucket's default


def test_an_empty_kms_key_id_is_refused_not_taken_as_the_default_key(
        w: dict[str, Any]) -> None:
    """A Deny of aws:kms writes that name no key (Null on
    s3:x-amz-server-side-encryption-aws-kms-key-id) held when the header was absent, while an
    empty one, present to the condition, was written under the default key: refused now."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "true"}}}))
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="k", Body=b"x",
                                        ServerSideEncryption="aws:kms")) == (403, "AccessDenied")

    def empty(request: Any, **_: Any) -> None:
        request.headers["x-amz-server-side-encryption-aws-kms-key-id"] = ""

    a.meta.events.register("before-sign.s3.PutObject", empty)
    try:
        assert refusal(lambda: a.put_object(Bucket=bucket, Key="k", Body=b"x",
                                            ServerSideEncryption="aws:kms"))[0] == 400
    finally:
        a.meta.events.unregister("before-sign.s3.PutObject", empty)
    assert "Contents" not in a.list_objects_v2(Bucket=bucket)


@pytest.mark.parametrize("key,value", [("s3:authType", "POST"),
                                       ("s3:signatureversion", "AWS4-HMAC-SHA256")])
def test_a_signed_post_upload_has_its_auth_type(w: dict[str, Any], key: str,
                                                value: str) -> None:
    """A signed browser upload's s3:authType is POST and its s3:signatureversion the form's
    (AWS, "bucket-policy-s3-sigv4-conditions"): both were absent, so a Deny of POST uploads
    never applied. A PUT (REST-HEADER) is not refused by the POST Deny."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": {"StringEquals": {key: value}}}))
    form = a.generate_presigned_post(bucket, "post")
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f", b"x")},
                      timeout=60)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text, r.text
    assert "Contents" not in a.list_objects_v2(Bucket=bucket)
    if key == "s3:authType":
        a.put_object(Bucket=bucket, Key="put", Body=b"x")


def test_a_negated_tag_deny_is_not_escaped_by_a_case_twin(w: dict[str, Any]) -> None:
    """review21e: "Deny PutObject unless s3:RequestObjectTag/Classification is public"
    (StringNotEquals) must refuse a tag set that also carries classification=secret: the
    case twin is one more value of the same case-insensitive key, and the object is written
    with it. Any-match of the twins let both orders through (last-one-wins let one)."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringNotEquals": {"s3:RequestObjectTag/Classification": "public"}}}))
    a.put_object(Bucket=bucket, Key="ok", Body=b"x", Tagging="Classification=public")
    for tagging in ("Classification=public&classification=secret",
                    "classification=secret&Classification=public"):
        assert refusal(lambda t=tagging: a.put_object(
            Bucket=bucket, Key="twin", Body=b"x", Tagging=t)) == (403, "AccessDenied")


def test_a_lock_header_is_judged_only_where_it_applies(w: dict[str, Any]) -> None:
    """review21e L5: x-amz-object-lock-legal-hold on a GetObject applies nothing, and AWS
    puts no s3:object-lock-* key in its context: an Allow of GetObject conditioned on it is
    not earned by sending the header (it was), while on a PutObject it is judged (and the
    legal hold it sets needs s3:PutObjectLegalHold, AWS's check on top)."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w, ObjectLockEnabledForBucket=True)
    a.put_object(Bucket=bucket, Key="k", Body=b"x")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": w["name_b"]},
        "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectLegalHold"],
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringEquals": {"s3:object-lock-legal-hold": "OFF"}}}))

    def hold_off(request: Any, **_: Any) -> None:
        request.headers["x-amz-object-lock-legal-hold"] = "OFF"

    b.meta.events.register("before-sign.s3.GetObject", hold_off)
    try:
        assert refusal(lambda: b.get_object(Bucket=bucket, Key="k")) == (403, "AccessDenied")
    finally:
        b.meta.events.unregister("before-sign.s3.GetObject", hold_off)
    b.put_object(Bucket=bucket, Key="b", Body=b"y", ObjectLockLegalHoldStatus="OFF")
    assert refusal(lambda: b.put_object(Bucket=bucket, Key="b2", Body=b"y")) \
        == (403, "AccessDenied")


def test_remaining_retention_days_is_the_retention_the_request_applies(
        w: dict[str, Any]) -> None:
    """s3low22: s3:object-lock-remaining-retention-days (refused as unknown before) is the
    days from now to the date the request locks until, a part of a day counting as a day:
    "at most 10 days" lets 9 days through and refuses 10 days and an hour, on PutObject's
    header and on PutObjectRetention's body alike."""
    a = w["a"]
    bucket = new_bucket(w, ObjectLockEnabledForBucket=True)
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*",
        "Action": ["s3:PutObject", "s3:PutObjectRetention"],
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"NumericGreaterThan": {"s3:object-lock-remaining-retention-days": "10"}}}))
    now = datetime.now(UTC).replace(microsecond=0)
    ok, long = now + timedelta(days=9), now + timedelta(days=10, hours=1)
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="k", Body=b"x",
                                        ObjectLockMode="GOVERNANCE",
                                        ObjectLockRetainUntilDate=long)) == (403, "AccessDenied")
    a.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                 ObjectLockRetainUntilDate=ok)
    a.put_object(Bucket=bucket, Key="plain", Body=b"x")  # no retention: no key, no Deny
    assert refusal(lambda: a.put_object_retention(Bucket=bucket, Key="plain", Retention={
        "Mode": "GOVERNANCE", "RetainUntilDate": long})) == (403, "AccessDenied")
    a.put_object_retention(Bucket=bucket, Key="plain", Retention={
        "Mode": "GOVERNANCE", "RetainUntilDate": ok})
    assert a.get_object_retention(Bucket=bucket, Key="plain")["Retention"][
        "RetainUntilDate"] == ok
