"""review18c M2: refused admin requests need no key, so a flood of them must not rotate the
record of real admin actions away. They go to their own capped file (audit-refused.log);
GET /admin/v1/audit still lists both, newest first; /metrics counts each file's entries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.admincli import admin_request
from tests.integration.cluster import LocalCluster, fetch

FLOOD = 120  # refused requests of ~200 bytes each: several times the 4096-byte cap below


@pytest.fixture
def small_audit_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster whose audit log rotates at the floor, 4096 bytes, keeping one backup."""
    c = LocalCluster(tmp_path / "data",
                     first_config=lambda t: t + "\n[audit]\nmax_bytes = 4096\nbackups = 1\n")
    c.start()
    yield c
    c.stop()


def _kept(audit_dir: Path) -> list[dict]:
    """Every entry in every audit file still on disk (current and rotated)."""
    return [json.loads(line) for f in sorted(audit_dir.glob("audit*.log*"))
            if not f.name.endswith(".lock") for line in f.read_text().splitlines()]


def test_a_flood_of_refused_requests_keeps_the_real_admin_actions(
        small_audit_cluster: LocalCluster) -> None:
    c = small_audit_cluster
    admin_request("POST", "/tenants", {"name": "kept-tenant"}, env=c.env)
    url = c.env["TESSERA_ADMIN_URL"] + "/admin/v1/tenants/x"
    for _ in range(FLOOD):  # unsigned: refused, and audited as "anonymous"
        status, _body = fetch(url)
        assert status == 401
    kept = _kept(c.data / "audit")
    created = [e for e in kept if e["action"] == "tenant.create" and e["result"] == "ok"]
    assert created, "the refused flood rotated the tenant.create entry away"
    refused = [e for e in kept if e["result"].startswith("denied:")]
    assert refused and all(e["who"] == "anonymous" for e in refused)
    assert not any(e["result"].startswith("denied:") for e in
                   map(json.loads, (c.data / "audit" / "audit.log").read_text().splitlines()))
    # the listing still shows both kinds, newest first
    doc = admin_request("GET", "/audit", query={"limit": "1000"}, env=c.env)
    assert doc["truncated"] is False and doc["cut_short"] == []  # read to the end (small)
    listed = doc["entries"]
    assert any(e["action"] == "tenant.create" for e in listed)
    assert listed[0]["result"].startswith("denied:")  # the last refused request
    ts = [e["ts"] for e in listed]
    assert ts == sorted(ts, reverse=True)
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    m = re.search(r'^tessera_audit_entries_total\{file="refused"\} (\S+)$', text.decode(), re.M)
    assert m and float(m.group(1)) >= FLOOD
    # rotated actions are listed too (final-s18: the listing read only the current files)
    for i in range(40):  # ~150 bytes each: audit.log rotates at least once
        admin_request("POST", "/tenants", {"name": f"rot-{i}"}, env=c.env)
    rotated = [json.loads(line) for line in
               (c.data / "audit" / "audit.log.1").read_text().splitlines()]
    assert any(e["action"] == "tenant.create" for e in rotated)
    listed = admin_request("GET", "/audit", query={"limit": "1000", "action": "tenant.create"},
                           env=c.env)["entries"]
    on_disk = [e for e in _kept(c.data / "audit") if e["action"] == "tenant.create"]
    assert sorted(e["tenant"] for e in listed) == sorted(e["tenant"] for e in on_disk), \
        "entries of a rotated audit file were not listed"
