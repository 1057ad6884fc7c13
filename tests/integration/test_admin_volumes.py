"""Block volumes over the admin API: lifecycle, errors, auth, audit log, shared with the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from storage.cluster import Cluster
from storage.config import load_config
from storage.volumes import VolumeService
from tests.integration.cluster import LocalCluster, audit_log

MiB = 1 << 20


def call(cluster: LocalCluster, method: str, path: str, body: Any = None,
         creds: tuple[str, str] | None = None, raw: bytes | None = None,
         sign: bool = True) -> tuple[int, dict[str, Any]]:
    """One admin API request signed with the admin key (or `creds`): (status, JSON body)."""
    url = cluster.env["TESSERA_ADMIN_URL"].rstrip("/") + "/admin/v1" + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    headers = {"X-Amz-Content-SHA256": hashlib.sha256(data).hexdigest(),
               "Content-Type": "application/json",
               "X-Tessera-Nonce": secrets.token_hex(8)}  # a signed change is served once
    if sign:
        ak, sk = creds or (cluster.env["TESSERA_ADMIN_ACCESS_KEY"],
                           cluster.env["TESSERA_ADMIN_SECRET_KEY"])
        req = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(Credentials(ak, sk), "s3", "us-east-1").add_auth(req)
        headers = dict(req.headers.items())
    r = urllib.request.Request(url, data=data or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def ok(cluster: LocalCluster, method: str, path: str, body: Any = None,
       status: int = 200) -> dict[str, Any]:
    code, out = call(cluster, method, path, body)
    assert code == status, (method, path, code, out)
    return out


def refused(cluster: LocalCluster, method: str, path: str, body: Any,
            status: int, code: str) -> str:
    got, out = call(cluster, method, path, body)
    assert (got, out.get("error", {}).get("code")) == (status, code), (method, path, got, out)
    return str(out["error"]["message"])


def new_tenant(cluster: LocalCluster) -> str:
    name = f"vol-{uuid.uuid4().hex[:8]}"
    ok(cluster, "POST", "/tenants", {"name": name}, status=201)
    return name


def volume_cli(cluster: LocalCluster, tenant: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`tessera volume ...` with tessera.env, as the admin credential naming the tenant."""
    env = {**os.environ, **cluster.env,
           "AWS_ACCESS_KEY_ID": cluster.env["TESSERA_ADMIN_ACCESS_KEY"],
           "AWS_SECRET_ACCESS_KEY": cluster.env["TESSERA_ADMIN_SECRET_KEY"]}
    return subprocess.run([sys.executable, "-m", "ops.cli", "volume", *args,
                           "--tenant", tenant], env=env, capture_output=True, text=True,
                          timeout=120)


class Direct:
    """The storage library opened in the test process, as the block driver uses it."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.config = Path(cluster.env["TESSERA_CONFIG"])

    def run(self, fn: Any) -> Any:
        async def go() -> Any:
            c = await Cluster.open(load_config(self.config))
            try:
                return await fn(VolumeService(c.cfg, c.meta, c.tenants, c.stripes))
            finally:
                await c.close()
        return asyncio.run(go())


def test_volume_lifecycle_over_http(cluster: LocalCluster) -> None:
    t = new_tenant(cluster)
    base = f"/tenants/{t}/volumes"
    assert ok(cluster, "GET", base) == {"volumes": []}
    v = ok(cluster, "POST", base, {"name": "db", "size": "64M"}, status=201)
    assert (v["name"], v["tenant"], v["size"], v["extent_size"]) == ("db", t, 64 * MiB, MiB)
    assert [x["name"] for x in ok(cluster, "GET", base)["volumes"]] == ["db"]
    # Data written through the library (as a mount would) before the snapshot.
    rng = random.Random(6)
    first, second = rng.randbytes(3 * MiB), rng.randbytes(MiB)

    async def write(svc: VolumeService, data: bytes, off: int) -> None:
        h = await svc.open(t, "db", holder="test")
        try:
            await h.write(off, data)
        finally:
            await h.close()
    direct = Direct(cluster)
    direct.run(lambda svc: write(svc, first, 0))
    shown = ok(cluster, "GET", f"{base}/db")
    assert shown["stored_bytes"] == 3 * MiB and shown["attached_by"] is None
    v = ok(cluster, "POST", f"{base}/db/resize", {"size": 128 * MiB})
    assert v["size"] == 128 * MiB
    snap = ok(cluster, "POST", f"{base}/db/snapshots", {"name": "s1"}, status=201)
    assert snap["name"] == "s1" and snap["generation"] == 1 and snap["created"] > 0
    direct.run(lambda svc: write(svc, second, 0))  # after the snapshot: not in the clone
    listed = ok(cluster, "GET", f"{base}/db/snapshots")["snapshots"]
    assert [(s["name"], s["generation"]) for s in listed] == [("s1", 1)]
    c = ok(cluster, "POST", f"{base}/db/clone", {"snapshot": "s1", "name": "db-copy"},
           status=201)
    assert c["base"]["name"] == "db" and c["base"]["gen"] == 1 and c["size"] == 128 * MiB
    assert ok(cluster, "GET", f"{base}/db")["clones"] == [f"{t}/db-copy"]
    assert ok(cluster, "GET", f"{base}/db-copy")["stored_bytes"] == 0  # shares the origin's
    msg = refused(cluster, "DELETE", f"{base}/db", None, 409, "VolumeInUse")
    assert "has clones" in msg
    msg = refused(cluster, "DELETE", f"{base}/db/snapshots/s1", None, 409, "SnapshotHasClones")
    assert "db-copy" in msg
    flat = ok(cluster, "POST", f"{base}/db-copy/flatten")
    assert flat["base"] is None
    assert ok(cluster, "GET", f"{base}/db-copy")["stored_bytes"] == 3 * MiB
    assert ok(cluster, "GET", f"{base}/db")["clones"] == []

    async def read(svc: VolumeService, name: str) -> bytes:
        h = await svc.open(t, name, holder="test-read")
        try:
            return await h.read(0, 4 * MiB)
        finally:
            await h.close()
    assert direct.run(lambda svc: read(svc, "db-copy")) == first + bytes(MiB)
    assert direct.run(lambda svc: read(svc, "db")) == second + first[MiB:] + bytes(MiB)
    # The tenant cannot go while it owns volumes.
    msg = refused(cluster, "DELETE", f"/tenants/{t}", None, 409, "TenantNotEmpty")
    assert "volumes" in msg
    assert ok(cluster, "DELETE", f"{base}/db/snapshots/s1") == {"volume": "db", "name": "s1",
                                                                 "deleted": True}
    assert ok(cluster, "GET", f"{base}/db/snapshots") == {"snapshots": []}
    for name in ("db", "db-copy"):
        assert ok(cluster, "DELETE", f"{base}/{name}")["deleted"] is True
    assert ok(cluster, "GET", base) == {"volumes": []}
    refused(cluster, "GET", f"{base}/db", None, 404, "NoSuchVolume")
    ok(cluster, "DELETE", f"/tenants/{t}")


def test_volume_errors_are_json_with_clear_codes(cluster: LocalCluster) -> None:
    t = new_tenant(cluster)
    base = f"/tenants/{t}/volumes"
    assert "10G" in refused(cluster, "POST", base, {"name": "v", "size": "ten gigs"}, 400,
                            "InvalidArgument")
    refused(cluster, "POST", base, {"name": "v", "size": True}, 400, "InvalidArgument")
    refused(cluster, "POST", base, {"name": "v"}, 400, "InvalidArgument")
    assert "4 KiB" in refused(cluster, "POST", base, {"name": "v", "size": 1000}, 400,
                              "InvalidArgument")
    assert "1 EiB" in refused(cluster, "POST", base, {"name": "v", "size": "99999P"}, 400,
                              "InvalidArgument")
    assert "letters" in refused(cluster, "POST", base, {"name": "../x", "size": "1G"}, 400,
                                "InvalidArgument")
    refused(cluster, "POST", base, {"name": "v", "size": "1G", "extent_size": "16M"}, 400,
            "InvalidArgument")
    assert "profile" in refused(cluster, "POST", base, {"name": "v", "size": "1G",
                                                        "profile": "nope"}, 400,
                                "InvalidArgument")
    code, out = call(cluster, "POST", base, raw=b"{not json")
    assert code == 400 and out["error"]["code"] == "MalformedJSON"
    code, out = call(cluster, "POST", base, raw=json.dumps({"name": "v", "size": "1G",
                                                             "pad": "x" * 70_000}).encode())
    assert code == 413 and out["error"]["code"] == "EntityTooLarge"
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    refused(cluster, "GET", f"/tenants/{ghost}/volumes", None, 404, "NoSuchTenant")
    refused(cluster, "POST", f"/tenants/{ghost}/volumes", {"name": "v", "size": "1G"}, 404,
            "NoSuchTenant")
    refused(cluster, "GET", "/tenants/_system/volumes", None, 404, "NoSuchTenant")
    ok(cluster, "POST", base, {"name": "v", "size": "1G"}, status=201)
    assert "already exists" in refused(cluster, "POST", base, {"name": "v", "size": "1G"},
                                       409, "VolumeAlreadyExists")
    assert "only grow" in refused(cluster, "POST", f"{base}/v/resize", {"size": "512M"}, 400,
                                  "InvalidArgument")
    refused(cluster, "POST", f"{base}/nope/resize", {"size": "2G"}, 404, "NoSuchVolume")
    refused(cluster, "POST", f"{base}/v/clone", {"snapshot": "none", "name": "c"}, 404,
            "NoSuchSnapshot")
    refused(cluster, "DELETE", f"{base}/v/snapshots/none", None, 404, "NoSuchSnapshot")
    assert "letters" in refused(cluster, "POST", f"{base}/v/snapshots", {"name": "../x"}, 400,
                                "InvalidArgument")  # review22g: the name checked, not a 500
    ok(cluster, "POST", f"{base}/v/snapshots", {"name": "s"}, status=201)
    refused(cluster, "POST", f"{base}/v/snapshots", {"name": "s"}, 409, "SnapshotAlreadyExists")
    refused(cluster, "POST", f"{base}/v/clone", {"snapshot": "s", "name": "v"}, 409,
            "VolumeAlreadyExists")

    # An attached volume (a writer holds the lease) can be neither deleted nor flattened.
    async def attached(svc: VolumeService) -> tuple[Any, ...]:
        h = await svc.open(t, "v", holder="pytest-writer")
        try:
            shown = await asyncio.to_thread(ok, cluster, "GET", f"{base}/v")
            delete = await asyncio.to_thread(call, cluster, "DELETE", f"{base}/v")
            flatten = await asyncio.to_thread(call, cluster, "POST", f"{base}/v/flatten")
            return shown, delete, flatten
        finally:
            await h.close()
    shown, (dcode, dout), (fcode, fout) = Direct(cluster).run(attached)
    assert shown["attached_by"]["holder"] == "pytest-writer"
    assert dcode == 409 and dout["error"]["code"] == "VolumeAttached"
    assert "pytest-writer" in dout["error"]["message"]
    assert fcode == 409 and fout["error"]["code"] == "VolumeAttached"
    assert ok(cluster, "DELETE", f"{base}/v/snapshots/s")["deleted"] is True
    assert ok(cluster, "DELETE", f"{base}/v")["deleted"] is True


def test_volume_routes_need_an_admin_signature(cluster: LocalCluster) -> None:
    t = new_tenant(cluster)
    base = f"/tenants/{t}/volumes"
    code, out = call(cluster, "GET", base, sign=False)
    assert code == 401 and out["error"]["code"] == "MissingAuthentication"
    s3_key = (cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"])
    code, out = call(cluster, "POST", base, {"name": "x", "size": "1G"}, creds=s3_key)
    assert code == 403 and out["error"]["code"] == "AccessDenied"
    wrong = (cluster.env["TESSERA_ADMIN_ACCESS_KEY"], "x" * 40)
    code, out = call(cluster, "DELETE", f"{base}/x", creds=wrong)
    assert code == 403 and out["error"]["code"] == "SignatureDoesNotMatch"
    assert ok(cluster, "GET", base) == {"volumes": []}  # nothing was created
    log = audit_log(cluster.data)
    mine = [e for e in log if e.get("tenant") == t and e["action"].startswith("volume.")]
    assert {(e["action"], e["result"], e["who"]) for e in mine} >= {
        ("volume.list", "denied:MissingAuthentication", "anonymous"),
        ("volume.create", "denied:AccessDenied", s3_key[0]),
        ("volume.delete", "denied:SignatureDoesNotMatch", cluster.env["TESSERA_ADMIN_ACCESS_KEY"]),
    }


def test_http_and_cli_share_volumes_and_actions_are_audited(cluster: LocalCluster) -> None:
    t = new_tenant(cluster)
    base = f"/tenants/{t}/volumes"
    ok(cluster, "POST", base, {"name": "web", "size": "2G", "extent_size": "4M"}, status=201)
    r = volume_cli(cluster, t, "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(v["name"], v["size"], v["extent_size"]) for v in rows] == [("web", 2 << 30,
                                                                        4 * MiB)]
    r = volume_cli(cluster, t, "list")
    assert r.returncode == 0 and "web" in r.stdout and "2.0 GiB" in r.stdout
    # And the other way: what the CLI makes, the API sees.
    r = volume_cli(cluster, t, "create", "cache", "--size", "256M")
    assert r.returncode == 0, r.stderr
    assert sorted(v["name"] for v in ok(cluster, "GET", base)["volumes"]) == ["cache", "web"]
    ok(cluster, "POST", f"{base}/web/snapshots", {"name": "nightly"}, status=201)
    ok(cluster, "POST", f"{base}/web/clone", {"snapshot": "nightly", "name": "web2"},
       status=201)
    refused(cluster, "DELETE", f"{base}/web", None, 409, "VolumeInUse")
    r = volume_cli(cluster, t, "show", "web2", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["base"]["name"] == "web"
    for name in ("web2", "web", "cache"):
        ok(cluster, "DELETE", f"{base}/{name}")
    r = volume_cli(cluster, t, "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    log = [json.loads(line) for line in
           (cluster.data / "audit" / "audit.log").read_text().splitlines()]
    mine = [e for e in log if e.get("tenant") == t and e["action"].startswith("volume.")]
    admin = cluster.env["TESSERA_ADMIN_ACCESS_KEY"]
    assert all(e["who"] == admin and e["ts"] > 0 for e in mine)
    create = next(e for e in mine if e["action"] == "volume.create")
    assert (create["volume"], create["size"], create["result"]) == ("web", 2 << 30, "ok")
    assert any(e["action"] == "volume.snapshot-create" and e["volume"] == "web"
               and e["snapshot"] == "nightly" and e["result"] == "ok" for e in mine)
    assert any(e["action"] == "volume.clone" and e["volume"] == "web" and e["clone"] == "web2"
               and e["snapshot"] == "nightly" for e in mine)
    assert any(e["action"] == "volume.delete" and e["volume"] == "web"
               and e["result"] == "error:VolumeInUse" for e in mine)
    assert {e["volume"] for e in mine if e["action"] == "volume.delete"
            and e["result"] == "ok"} == {"web", "web2", "cache"}
    assert cluster.env["TESSERA_ADMIN_SECRET_KEY"] not in json.dumps(log)


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
    reason="mounting a volume needs root, /dev/fuse and fuse3")
def test_snapshot_over_http_flushes_a_local_mount(cluster: LocalCluster, tmp_path: Path) -> None:
    t = new_tenant(cluster)
    base = f"/tenants/{t}/volumes"
    ok(cluster, "POST", base, {"name": "m", "size": "16M"}, status=201)
    d = tmp_path / "m"
    r = volume_cli(cluster, t, "mount", "m", str(d))
    assert r.returncode == 0, r.stderr
    data = random.Random(11).randbytes(MiB + 4096)
    try:
        fd = os.open(d / "volume", os.O_WRONLY)
        try:  # no fsync and no close (a flush): the write sits in the write-back cache
            os.pwrite(fd, data, 2 * MiB)
            ok(cluster, "POST", f"{base}/m/snapshots", {"name": "s"}, status=201)
        finally:
            os.close(fd)
        shown = ok(cluster, "GET", f"{base}/m")
        assert shown["attached_by"] is not None
        msg = refused(cluster, "DELETE", f"{base}/m", None, 409, "VolumeAttached")
        assert "attached" in msg
    finally:
        r = volume_cli(cluster, t, "unmount", str(d))
        assert r.returncode == 0, r.stderr

    async def read_snapshot(svc: VolumeService) -> bytes:
        h = await svc.open(t, "m", holder="pytest", snapshot="s")
        return await h.read(2 * MiB, len(data))
    assert Direct(cluster).run(read_snapshot) == data
    ok(cluster, "DELETE", f"{base}/m/snapshots/s")
    ok(cluster, "DELETE", f"{base}/m")


def test_cli_names_a_missing_tenant_and_how_to_name_another(cluster: LocalCluster) -> None:
    """A misspelt --tenant is an error (not an empty list); a tenant key says which key to use."""
    r = volume_cli(cluster, "no-such-tenant", "list")
    assert r.returncode == 1 and "'no-such-tenant' does not exist" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    as_tenant = {**os.environ, **cluster.env}  # tessera.env's own tenant key
    r = subprocess.run([sys.executable, "-m", "ops.cli", "volume", "list", "--tenant",
                        new_tenant(cluster)], env=as_tenant, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "TESSERA_ADMIN_ACCESS_KEY" in r.stderr, r.stderr


def test_cli_json_is_json_for_every_changing_command(cluster: LocalCluster,
                                                     tmp_path: Path) -> None:
    """`--json` is accepted by every volume command, so every one answers in JSON."""
    t = new_tenant(cluster)
    img = tmp_path / "img"
    img.write_bytes(b"x" * 4096)
    steps = [("create", "j1", "--size", "8M"), ("snapshot", "create", "j1", "s1"),
             ("clone", "j1@s1", "j2"), ("flatten", "j2"), ("resize", "j1", "--size", "16M"),
             ("import", "j2", str(img)), ("export", "j2", str(tmp_path / "out")),
             ("delete", "j2"), ("snapshot", "delete", "j1", "s1"), ("delete", "j1")]
    for step in steps:
        r = volume_cli(cluster, t, *step, "--json")
        assert r.returncode == 0, (step, r.stderr)
        assert isinstance(json.loads(r.stdout), dict), (step, r.stdout)
    assert json.loads(volume_cli(cluster, t, "list", "--json").stdout) == []


def test_cli_flatten_says_whether_there_was_an_origin(cluster: LocalCluster) -> None:
    """Flattening a volume that is no clone (or no longer one) says so, never that it 'no
    longer depends on its origin' as if extents had been copied."""
    t = new_tenant(cluster)
    for step in (("create", "f1", "--size", "8M"), ("snapshot", "create", "f1", "s1"),
                 ("clone", "f1@s1", "f2")):
        assert volume_cli(cluster, t, *step).returncode == 0
    r = volume_cli(cluster, t, "flatten", "f1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "volume f1 is not a clone: it has no origin to stop depending on"
    r = volume_cli(cluster, t, "flatten", "f2")
    assert r.stdout.strip() == "volume f2 no longer depends on its origin", r.stdout
    r = volume_cli(cluster, t, "flatten", "f2")
    assert "volume f2 is not a clone" in r.stdout, r.stdout
