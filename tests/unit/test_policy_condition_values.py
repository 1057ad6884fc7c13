"""atkpolicy21: a condition whose policy value its operator cannot read is refused at
PutBucketPolicy (MalformedPolicy), never stored: a Deny with NumericGreaterThan "1_0x" or
IpAddress "10.0.0.300/8" never held, so it was accepted and silently not applied. The forms
refused are those IAM Access Analyzer reports as errors (a value not of the operator's data
type, several values for Bool, Null with ...IfExists); a readable value stays accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.s3 import policy
from gateway.s3.errors import S3Error

BUCKET = "bk"


def _doc(condition: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": f"arn:aws:s3:::{BUCKET}/*", "Condition": condition}]})


@pytest.mark.parametrize("condition", [
    {"NumericGreaterThan": {"s3:max-keys": "abc"}},
    {"NumericLessThan": {"s3:max-keys": "1_000"}},
    {"NumericEquals": {"s3:max-keys": "nan"}},
    {"NumericNotEquals": {"s3:max-keys": "inf"}},
    {"NumericLessThanEquals": {"s3:max-keys": "\u0661\u0660"}},  # Arabic-Indic digits
    {"DateGreaterThan": {"aws:CurrentTime": "not-a-date"}},
    {"DateLessThanIfExists": {"s3:object-lock-retain-until-date": "2030-13-01T00:00:00Z"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}},
    {"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "my-office"]}},
    {"Bool": {"aws:SecureTransport": ["true", "false"]}},
    {"NullIfExists": {"s3:prefix": "true"}},
    {"ForAnyValue:Null": {"s3:prefix": "true"}},
])
def test_unreadable_condition_values_are_refused(condition: dict[str, Any]) -> None:
    with pytest.raises(S3Error) as e:
        policy.validate(_doc(condition), BUCKET)
    assert e.value.code == "MalformedPolicy"


@pytest.mark.parametrize("condition", [
    {"NumericGreaterThan": {"s3:max-keys": "10"}},
    {"NumericLessThan": {"s3:max-keys": ["-1.5", 100, "2e3"]}},
    {"DateGreaterThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
    {"DateLessThan": {"aws:EpochTime": "1893456000"}},
    {"DateEquals": {"aws:CurrentTime": "2030-01-01"}},
    {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]}},
    {"Bool": {"aws:SecureTransport": "false"}},
    {"Bool": {"aws:SecureTransport": True}},
    {"Null": {"s3:prefix": "true"}},
])
def test_readable_condition_values_are_stored(condition: dict[str, Any]) -> None:
    policy.validate(_doc(condition), BUCKET)


def _principal_doc(principal: Any) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": principal, "Action": "s3:*",
        "Resource": f"arn:aws:s3:::{BUCKET}/*"}]})


@pytest.mark.parametrize("principal", [
    {"AWS": "arn:aws:iam::*:root"},
    {"AWS": ["tenant-b", "arn:aws:iam::tenant-?:root"]},
    {"AWS": "tenant*"},
    {"CanonicalUser": "abc*"},
    {"Service": "*"},
    {"Service": "logging.s3.*"},
    ["*"],  # a principal is "*" or an object (the grammar's principal_block), never a list
    [{"AWS": "tenant-b"}],
])
def test_a_wildcard_inside_a_principal_is_refused(principal: Any) -> None:
    """AWS: "You cannot use a wildcard to match part of a principal name or ARN" ("Invalid
    principal in policy"); here such a name matched no one, so a Deny naming
    `arn:aws:iam::*:root` was stored and applied to nobody."""
    with pytest.raises(S3Error) as e:
        policy.validate(_principal_doc(principal), BUCKET)
    assert e.value.code == "MalformedPolicy"


@pytest.mark.parametrize("principal", [
    "*", {"AWS": "*"}, {"AWS": ["tenant-b", "arn:aws:iam::tenant-c:root"]},
    {"CanonicalUser": "a" * 64}, {"Service": "logging.s3.amazonaws.com"},
])
def test_whole_principals_are_stored(principal: Any) -> None:
    policy.validate(_principal_doc(principal), BUCKET)
