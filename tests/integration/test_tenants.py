"""Tenants and access keys end to end: the admin CLI, the admin API's auth and audit log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from ops.admincli import CliError, admin_request
from ops.botoconfig import no_retries
from storage.crypto.keys import FileRootKey
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService
from tests.integration.cluster import LocalCluster
from tests.integration.test_at_rest import new_tenant


def tessera(cluster: LocalCluster, *args: str, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **cluster.env, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=e,
                          capture_output=True, text=True, timeout=60)


def s3_for(cluster: LocalCluster, ak: str, sk: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=cluster.endpoint, aws_access_key_id=ak,
                        aws_secret_access_key=sk, region_name="us-east-1",
                        config=no_retries())


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_tenant_and_key_cli_end_to_end(cluster: LocalCluster) -> None:
    name = uniq("acme")
    r = tessera(cluster, "tenant", "create", name)
    assert r.returncode == 0, r.stderr
    assert name in r.stdout and "NAME" in r.stdout
    r = tessera(cluster, "key", "create", "--tenant", name, "--json")
    assert r.returncode == 0, r.stderr
    cred = json.loads(r.stdout)
    assert set(cred) >= {"access_key_id", "secret_access_key"}
    s3 = s3_for(cluster, cred["access_key_id"], cred["secret_access_key"])
    bucket = uniq("acme-b")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello acme")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello acme"
    listed = json.loads(tessera(cluster, "tenant", "list", "--json").stdout)
    row = next(t for t in listed["tenants"] if t["name"] == name)
    assert row["buckets"] == 1 and row["state"] == "active"
    shown = tessera(cluster, "tenant", "show", name)
    assert shown.returncode == 0 and "kek_version" in shown.stdout
    keys = json.loads(tessera(cluster, "key", "list", "--tenant", name, "--json").stdout)
    assert [k["access_key_id"] for k in keys["keys"]] == [cred["access_key_id"]]
    assert "secret" not in json.dumps(keys)
    table = tessera(cluster, "key", "list", "--tenant", name).stdout
    assert cred["access_key_id"] in table and cred["secret_access_key"] not in table
    # A tenant that owns a bucket cannot be deleted.
    r = tessera(cluster, "tenant", "delete", name)
    assert r.returncode == 1 and "still owns buckets" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # Revoke: the key stops working (after the short credential cache).
    assert tessera(cluster, "key", "revoke", cred["access_key_id"]).returncode == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            s3.list_objects_v2(Bucket=bucket)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidAccessKeyId"
            break
        time.sleep(0.2)
    else:
        pytest.fail("a revoked key still works")


def test_delete_empty_tenant_and_errors_are_one_line(cluster: LocalCluster) -> None:
    name = uniq("empty")
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    dup = tessera(cluster, "tenant", "create", name)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    assert tessera(cluster, "tenant", "delete", name).returncode == 0
    r = tessera(cluster, "tenant", "show", name)
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert r.stderr.count("\n") == 1
    r = tessera(cluster, "key", "create", "--tenant", uniq("ghost"))
    assert r.returncode == 1 and "tessera tenant create" in r.stderr
    r = tessera(cluster, "tenant", "list", env={"TESSERA_ADMIN_URL": ""})
    assert r.returncode == 1 and "TESSERA_ADMIN_URL" in r.stderr
    r = tessera(cluster, "tenant", "list", env={"TESSERA_ADMIN_URL": "http://127.0.0.1:9"})
    assert r.returncode == 1 and "cannot reach" in r.stderr and "Traceback" not in r.stderr


def test_admin_api_refuses_tenant_keys_and_bad_signatures(cluster: LocalCluster) -> None:
    tenant_env = {**cluster.env, "TESSERA_ADMIN_ACCESS_KEY": cluster.env["AWS_ACCESS_KEY_ID"],
                  "TESSERA_ADMIN_SECRET_KEY": cluster.env["AWS_SECRET_ACCESS_KEY"]}
    with pytest.raises(CliError, match="AccessDenied"):
        admin_request("GET", "/tenants", env=tenant_env)
    wrong = {**cluster.env, "TESSERA_ADMIN_SECRET_KEY": "x" * 40}
    with pytest.raises(CliError, match="SignatureDoesNotMatch"):
        admin_request("GET", "/tenants", env=wrong)
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(cluster.env["TESSERA_ADMIN_URL"] + "/admin/v1/tenants",
                               timeout=10)
    assert ei.value.code == 401
    # The admin key is not an S3 key.
    s3 = s3_for(cluster, cluster.env["TESSERA_ADMIN_ACCESS_KEY"],
                cluster.env["TESSERA_ADMIN_SECRET_KEY"])
    with pytest.raises(ClientError) as ce:
        s3.list_buckets()
    assert ce.value.response["Error"]["Code"] == "AccessDenied"


async def _fence(cluster: LocalCluster, name: str) -> None:
    """What a shred that died after fencing leaves: the tenant "shredding" (set from this
    process, on the cluster's SQLite file beside the gateway, as another gateway would)."""
    meta = await SqliteStore.open(cluster.db_path)
    try:
        await TenantService(meta, FileRootKey(cluster.data / "secrets" / "root.key")).fence(name)
    finally:
        await meta.close()


def test_cancel_ends_the_fence_a_dead_shred_left(cluster: LocalCluster) -> None:
    """A tenant left "shredding" refuses writes (503), rotation and new keys, each saying how
    to leave it; `tenant shred --cancel` makes it active again without shredding it."""
    name, s3, _ = new_tenant(cluster, "fenced")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k", Body=b"kept")
    asyncio.run(_fence(cluster, name))
    with pytest.raises(ClientError) as ce:
        s3.put_object(Bucket=name, Key="n", Body=b"new")
    assert ce.value.response["Error"]["Code"] == "ServiceUnavailable"
    hint = f"wait or cancel it with tessera tenant shred {name} --cancel"
    for args in (("tenant", "rotate-key", name), ("key", "create", "--tenant", name)):
        r = tessera(cluster, *args)
        assert r.returncode != 0 and hint in r.stderr, r.stderr
    r = tessera(cluster, "tenant", "shred", name, "--cancel", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "active"
    s3.put_object(Bucket=name, Key="n", Body=b"new")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"kept"
    assert tessera(cluster, "tenant", "rotate-key", name).returncode == 0
    r = tessera(cluster, "tenant", "shred", name, "--cancel")
    assert r.returncode != 0 and "NotFound" in r.stderr, "a cancel with nothing to cancel"


def test_shred_needs_confirmation_and_honours_wait(cluster: LocalCluster) -> None:
    name = uniq("wait")
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    r = tessera(cluster, "tenant", "shred", name)
    assert r.returncode == 1 and f"--confirm {name}" in r.stderr
    with pytest.raises(CliError, match="ConfirmationRequired"):
        admin_request("POST", f"/tenants/{name}/shred", {"confirm": "nope"}, env=cluster.env)
    r = tessera(cluster, "tenant", "shred", name, "--confirm", name, "--wait", "600", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "scheduled"
    shown = admin_request("GET", f"/tenants/{name}", env=cluster.env)
    assert shown["state"] == "active" and shown["shred_due"] > time.time() + 500
    assert tessera(cluster, "tenant", "shred", name, "--cancel").returncode == 0
    assert admin_request("GET", f"/tenants/{name}", env=cluster.env)["shred_due"] is None
    r = tessera(cluster, "tenant", "shred", name, "--confirm", name, "--wait", "0.5")
    assert r.returncode == 0 and "will be destroyed" in r.stdout
    deadline = time.monotonic() + 20
    while admin_request("GET", f"/tenants/{name}", env=cluster.env)["state"] != "shredded":
        assert time.monotonic() < deadline, "scheduled shred never ran"
        time.sleep(0.2)


def test_audit_log_records_actions_without_secrets(cluster: LocalCluster) -> None:
    name = uniq("audit")
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    cred = json.loads(tessera(cluster, "key", "create", "--tenant", name, "--json").stdout)
    log = (cluster.data / "audit" / "audit.log").read_text()
    entries = [json.loads(line) for line in log.splitlines()]
    create = [e for e in entries if e["action"] == "tenant.create" and e.get("tenant") == name]
    assert create and create[0]["result"] == "ok"
    assert create[0]["who"] == cluster.env["TESSERA_ADMIN_ACCESS_KEY"] and create[0]["ts"] > 0
    assert any(e["action"] == "key.create" and e.get("access_key") == cred["access_key_id"]
               for e in entries)
    assert cred["secret_access_key"] not in log
    assert cluster.env["TESSERA_ADMIN_SECRET_KEY"] not in log


def test_audit_log_keeps_how_a_change_was_made(cluster: LocalCluster) -> None:
    """A shred that bypasses governance retention, the Block Public Access flags a tenant
    update set, and the value `config set` gave were computed for the audit log and then
    dropped (not in SAFE_FIELDS): a governance-bypassing shred read like any other."""
    name = uniq("audit-how")
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    flags = {"BlockPublicAcls": True, "RestrictPublicBuckets": False}
    admin_request("PATCH", f"/tenants/{name}", {"public_access_block": flags}, env=cluster.env)
    admin_request("POST", f"/tenants/{name}/shred", {
        "confirm": name, "wait_s": 600, "bypass_governance_retention": True}, env=cluster.env)
    admin_request("DELETE", f"/tenants/{name}/shred", env=cluster.env)
    setting = "repair.busy_lag_ms"
    current = admin_request("GET", "/config", env=cluster.env)["settings"][setting]["value"]
    admin_request("PUT", f"/config/{setting}", {"value": current}, env=cluster.env)
    admin_request("DELETE", f"/config/{setting}", env=cluster.env)
    entries = [json.loads(line) for line in
               (cluster.data / "audit" / "audit.log").read_text().splitlines()]
    mine = {e["action"]: e for e in entries if e.get("tenant", e.get("name")) == name}
    assert mine["tenant.update"]["public_access_block"] == flags
    assert mine["tenant.shred"]["bypass_governance_retention"] is True
    sets = [e for e in entries if e["action"] == "config.set" and e.get("name") == setting]
    assert sets and sets[-1]["value"] == current
