"""Two tenants on a shared cluster for cross-account S3 tests: the owner `a` and another
tenant `b`, each with its own canonical id, a fresh bucket for each test, and the (status,
code) a refused call answers. One copy for the policy and ACL modules that all need them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster


def two_tenants(cluster: LocalCluster, prefix: str) -> dict[str, Any]:
    """Tenants `{prefix}-a-TAG` (client "a", name "name_a") and `{prefix}-b-TAG` ("b",
    "name_b"); canonical ids "a"*56+TAG and "b"*56+TAG; "tag", a bucket counter "n" and the
    cluster's "endpoint"."""
    tag = uuid.uuid4().hex[:8]
    out: dict[str, Any] = {"prefix": prefix, "tag": tag, "n": 0, "endpoint": cluster.endpoint}
    for t in ("a", "b"):
        name = f"{prefix}-{t}-{tag}"
        out[t] = cluster.tenant_client(name, {"canonical_id": t * 56 + tag})
        out["name_" + t] = name
    return out


def new_bucket(w: dict[str, Any], **kw: Any) -> str:
    """A new bucket of tenant `a` (CreateBucket arguments `kw`), named uniquely in `w`."""
    w["n"] += 1
    name = f"{w['prefix']}-{w['tag']}-{w['n']}"
    w["a"].create_bucket(Bucket=name, **kw)
    return name


def policy(*statements: dict[str, Any]) -> str:
    """A bucket policy document holding `statements`."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def refusal(fn: Any) -> tuple[int, str]:
    """The HTTP status and S3 error code `fn()` is refused with (it must be refused)."""
    with pytest.raises(ClientError) as ei:
        fn()
    r = ei.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]
