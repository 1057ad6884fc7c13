"""review21e M2: tags whose keys differ only in case (S3 keeps both) are two values of one
case-insensitive tag condition key, which AWS gives one value: which twin it means is
ambiguous, so a Deny holds if its condition holds for either twin, an Allow only if for
both. A negated Deny (StringNotEquals .../Classification public: "only public-tagged") was
escaped by adding a `classification=public` twin beside `Classification=secret`."""

from __future__ import annotations

import json

import pytest

from gateway.s3 import policy

IDS = frozenset({"*"})


def _verdict(effect: str, op: str, key: str, twins: list[str]) -> str | None:
    sts = policy.statements(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": effect, "Principal": "*", "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::bk/*",
        "Condition": {op: {f"{key}/Classification": "public"}}}]}))
    ctx = {f"{key}/classification".lower(): twins}
    return policy.evaluate(sts, "s3:GetObject", policy.resource_of("bk", "k"), IDS, ctx)


@pytest.mark.parametrize("key", ["s3:RequestObjectTag", "s3:ExistingObjectTag"])
@pytest.mark.parametrize("twins", [["public", "secret"], ["secret", "public"]])
def test_a_twin_meeting_a_deny_makes_it_hold(key: str, twins: list[str]) -> None:
    assert _verdict("Deny", "StringNotEquals", key, twins) == "Deny"
    assert _verdict("Deny", "StringEquals", key, twins) == "Deny"
    assert _verdict("Deny", "StringNotEquals", key, ["public", "public"]) is None


@pytest.mark.parametrize("key", ["s3:RequestObjectTag", "s3:ExistingObjectTag"])
@pytest.mark.parametrize("twins", [["public", "secret"], ["secret", "public"]])
def test_an_allow_holds_only_if_every_twin_meets_it(key: str, twins: list[str]) -> None:
    assert _verdict("Allow", "StringEquals", key, twins) is None
    assert _verdict("Allow", "StringNotEquals", key, twins) is None
    assert _verdict("Allow", "StringEquals", key, ["public", "public"]) == "Allow"
    assert _verdict("Allow", "StringNotEquals", key, ["secret", "other"]) == "Allow"
