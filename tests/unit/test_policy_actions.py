"""s3low22: PutBucketPolicy refuses an action S3 does not define (AWS: MalformedPolicy
"Policy has invalid action"); before, `s3:GetObjekt` was stored and a Deny of it applied
to nothing. Names and wildcards that match S3 actions (any case) are stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.s3 import policy
from gateway.s3.errors import S3Error


def _doc(action: Any, element: str = "Action") -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", element: action,
        "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]}]})


@pytest.mark.parametrize("action", [
    "s3:GetObjekt", ["s3:GetObject", "s3:PutObjekt"], "iam:PassRole", "GetObject",
    "s3:Foo*", "s3", "s3:", "", 5, ["s3:ListObjects"], "s3:CreateSession"])
@pytest.mark.parametrize("element", ["Action", "NotAction"])
def test_an_action_s3_does_not_define_is_refused(action: Any, element: str) -> None:
    with pytest.raises(S3Error) as e:
        policy.validate(_doc(action, element), "b")
    assert (e.value.code, e.value.message) == ("MalformedPolicy", "Policy has invalid action")


@pytest.mark.parametrize("action", [
    "*", "s3:*", "s3:Get*", "S3:getobject", "s3:?etObject", "s3:PutBucketCORS",
    "s3:ListBucketVersions", "s3:GetAccessPoint", "s3:UpdateObjectEncryption",
    ["s3:GetObject", "s3:List*", "s3:BypassGovernanceRetention"]])
def test_actions_s3_defines_are_stored(action: Any) -> None:
    policy.validate(_doc(action), "b")
    policy.validate(_doc(action, "NotAction"), "b")
