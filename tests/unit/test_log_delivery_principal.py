"""The access-log delivery is a service principal: its request context holds
aws:PrincipalIsAWSService true, aws:ViaAWSService false and aws:RequestedRegion (the target
bucket's region), so a target policy may pin them as on AWS (lows18)."""

from __future__ import annotations

import json

import pytest

from gateway.s3.access_log import LOGGING_SERVICE, may_deliver
from storage.records import Bucket


def _target(condition: dict[str, dict[str, str]]) -> Bucket:
    doc = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": LOGGING_SERVICE},
        "Action": "s3:PutObject", "Resource": "arn:aws:s3:::logs/*", "Condition": condition}]}
    return Bucket(name="logs", tenant="owner", created=0.0, region="eu-west-1",
                  config={"policy": json.dumps(doc)})


@pytest.mark.parametrize("condition,allowed", [
    ({"Bool": {"aws:PrincipalIsAWSService": "true"}}, True),
    ({"Bool": {"aws:PrincipalIsAWSService": "false"}}, False),
    ({"Bool": {"aws:ViaAWSService": "false"}}, True),
    ({"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}, True),
    ({"StringEquals": {"aws:RequestedRegion": "us-east-1"}}, False),
])
def test_delivery_context_holds_the_service_keys(condition: dict[str, dict[str, str]],
                                                 allowed: bool) -> None:
    target = _target(condition)
    assert may_deliver(target, "p/", "src", "other", "other-id") is allowed
