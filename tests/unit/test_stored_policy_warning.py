"""review21e L4: a policy stored before atkpolicy21's strict reading and refused by it now
(NumericGreaterThan s3:max-keys "1_0": 10 before, nothing now, so its Deny no longer holds)
is still evaluated, never a 500, and the log says so once per bucket and policy text."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.s3 import authz

BUCKET = "stored-policy"


def _doc(value: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{BUCKET}",
        "Condition": {"NumericGreaterThan": {"s3:max-keys": value}}}]})


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and BUCKET in r.getMessage()]


def test_a_stored_policy_refused_now_is_warned_about_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=authz.__name__)
    stored = _doc("1_0")
    for _ in range(2):  # two requests: one warning
        assert len(authz._statements({}, BUCKET, stored)) == 1  # type: ignore[arg-type]
    (warning,) = _warnings(caplog)
    assert "would be refused now" in warning and "NumericGreaterThan" in warning
    caplog.clear()
    authz._statements({}, BUCKET, _doc("10"))  # type: ignore[arg-type]
    assert _warnings(caplog) == []  # a policy read as stored: nothing to say


def test_a_stored_policy_naming_an_unknown_action_is_evaluated_and_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    """s3low22: PutBucketPolicy refuses an action S3 does not define; one stored before is
    evaluated as before (the typo matches nothing) and logged once."""
    caplog.set_level(logging.WARNING, logger=authz.__name__)
    stored = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": ["s3:GetObjekt", "s3:ListBucket"],
        "Resource": f"arn:aws:s3:::{BUCKET}"}]})
    for _ in range(2):
        assert len(authz._statements({}, BUCKET, stored)) == 1  # type: ignore[arg-type]
    (warning,) = _warnings(caplog)
    assert "Policy has invalid action" in warning
