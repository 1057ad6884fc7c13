"""review18c L5: ArnEquals/ArnLike compare an ARN's six colon-separated components one by
one, as AWS does, and a canonical id holding ':' never makes aws:PrincipalArn match another
tenant's pattern (the whole string was globbed: `arn:aws:iam::111:*` matched the
PrincipalArn `arn:aws:iam::111:x:root` of the tenant whose canonical id is `111:x`)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.s3.authz import Requester, context
from gateway.s3.policy_conditions import holds
from gateway.s3.router import Endpoint


@pytest.mark.parametrize(("pattern", "value", "match"), [
    ("arn:aws:iam::111:*", "arn:aws:iam::111:root", True),
    ("arn:aws:iam::*:root", "arn:aws:iam::222:root", True),
    ("arn:aws:s3:::logs-*", "arn:aws:s3:::logs-2026", True),
    ("arn:aws:sns:*:111:topic:*", "arn:aws:sns:eu-1:111:topic:sub", True),  # resource ':'
    ("arn:aws:iam::1?1:root", "arn:aws:iam::121:root", True),
    ("arn:aws:iam::*", "arn:aws:iam::111:root", False),  # '*' stays in its component
    ("arn:*:root", "arn:aws:iam::111:root", False),
    ("arn:aws:iam::111*:root", "arn:aws:iam::111:x:root", False),
    ("*", "arn:aws:iam::111:root", False),  # not six components
    ("arn:aws:iam::111:root", "not-an-arn", False),
    ("arn:aws:iam::111:Root", "arn:aws:iam::111:root", False),  # case-sensitive
])
def test_arn_operators_match_component_by_component(pattern: str, value: str,
                                                    match: bool) -> None:
    ctx = {"aws:sourcearn": [value]}
    for op in ("ArnLike", "ArnEquals"):
        assert holds({op: {"aws:SourceArn": pattern}}, ctx) is match, op
        assert holds({op.replace("Arn", "ArnNot"): {"aws:SourceArn": pattern}}, ctx) is not match


def _principal_ctx(canonical_id: str) -> dict:
    request = make_mocked_request("GET", "/b/k")
    return context(request, Endpoint("GetObject", "b", "k"),
                   Requester("t", canonical_id, "AKIDEXAMPLE"), None, "us-east-1")


def test_a_canonical_id_holding_a_colon_matches_no_other_tenants_pattern() -> None:
    ctx = _principal_ctx("111:x")
    for op in ("ArnLike", "ArnEquals", "StringLike"):
        assert not holds({op: {"aws:PrincipalArn": "arn:aws:iam::111:*"}}, ctx), op
    assert holds({"StringEquals": {"aws:PrincipalAccount": "111:x"}}, ctx)
    own = _principal_ctx("111")
    assert holds({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111:*"}}, own)
    assert own["aws:principalarn"] == ["arn:aws:iam::111:root"]
