"""Smaller hardening defects of issue 11, on the shared real cluster: malformed admin JSON,
clients hanging up mid-GET, private file modes, and what a node's /metrics tells anyone."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from storage.shards.ids import shard_id
from tests.integration.cluster import LocalCluster

DEADLINE_S = 60.0


def admin_raw(cluster: LocalCluster, method: str, path: str, body: bytes,
              ) -> tuple[int, dict[str, object]]:
    """One SigV4-signed admin request with a raw body (the CLI only sends JSON objects)."""
    env = cluster.env
    url = env["TESSERA_ADMIN_URL"].rstrip("/") + "/admin/v1" + path
    headers = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
               "Content-Type": "application/json"}
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials(env["TESSERA_ADMIN_ACCESS_KEY"], env["TESSERA_ADMIN_SECRET_KEY"]),
              "s3", "us-east-1").add_auth(req)
    http = urllib.request.Request(url, data=body, method=method, headers=dict(req.headers))
    try:
        with urllib.request.urlopen(http, timeout=30) as r:  # noqa: S310
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def audit_entries(cluster: LocalCluster) -> list[dict[str, object]]:
    return [json.loads(line) for line in
            (cluster.data / "audit" / "audit.log").read_text().splitlines()]


def test_admin_api_answers_400_to_json_that_is_not_an_object_and_audits_it(
        cluster: LocalCluster) -> None:
    for raw in (b"[1]", b"null", b'"x"', b"3", b"true", b"{not json", b"[" * 60_000):
        before = len(audit_entries(cluster))
        status, doc = admin_raw(cluster, "POST", "/tenants", raw)
        assert status == 400, (raw[:20], status, doc)
        assert doc["error"]["code"] == "MalformedJSON" and doc["error"]["message"]
        new = audit_entries(cluster)[before:]
        assert [(e["action"], e["result"]) for e in new] == [
            ("tenant.create", "error:MalformedJSON")], raw[:20]
        assert new[0]["who"] == cluster.env["TESSERA_ADMIN_ACCESS_KEY"]
    status, doc = admin_raw(cluster, "GET", "/tenants", b"")  # still serving
    assert status == 200 and "tenants" in doc


def wait_for_line(path: Path, start: int, want: re.Pattern[str]) -> str:
    """The first line of `path` after byte `start` matching `want` (waits for it)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            f.seek(start)
            for line in f.read().decode(errors="replace").splitlines():
                if want.search(line):
                    return line
        time.sleep(0.1)
    raise AssertionError(f"no line matching {want.pattern} in {path}")


def test_client_hanging_up_mid_get_is_no_error_and_releases_node_streams(
        cluster: LocalCluster) -> None:
    s3 = cluster.client()
    bucket, key = f"hangup-{uuid.uuid4().hex[:8]}", "big.bin"
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(64 * 1024 * 1024)  # shards of 16 MiB: more than socket buffers hold
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    part = cluster.manifest(bucket, key).parts[0]
    gw_log = cluster.data / "logs" / "gateway.log"
    gw_mark = gw_log.stat().st_size
    node_marks = {n: (cluster.data / "logs" / f"{n}.log").stat().st_size
                  for n in part.nodes if n}

    signer = cluster.client(signature_version="s3v4")
    url = urlsplit(signer.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                                       "Key": key}))
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n"
                     .encode())
        got = sock.recv(64 * 1024)
        assert got.startswith(b"HTTP/1.1 200 "), got[:2000].decode(errors="replace")
        while len(got) < 2 * 1024 * 1024:
            chunk = sock.recv(256 * 1024)
            assert chunk, "gateway closed the connection early"
            got += chunk
    # closed with unread data: the gateway sees a reset mid-body

    line = wait_for_line(gw_log, gw_mark, re.compile(r'"client_closed":\s*true'))
    assert json.loads(line)["status"] == 499 and json.loads(line)["path"] == f"/{bucket}/{key}"
    # Every shard stream the read opened ends now (the node logs a request when it ends).

    def ended() -> int:
        return sum(f'"/v1/shards/{shard_id(part.stripe_id, i)}"' in
                   (cluster.data / "logs" / f"{n}.log").read_bytes()[node_marks[n]:].decode(
                       errors="replace")
                   for i, n in enumerate(part.nodes) if n)

    deadline = time.monotonic() + DEADLINE_S
    while ended() < part.k:
        assert time.monotonic() < deadline, "shard streams left open after the hang-up"
        time.sleep(0.2)

    s3.head_bucket(Bucket=bucket)  # still serving, and the whole object reads back
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    after = gw_log.read_bytes()[gw_mark:].decode(errors="replace")
    assert "Traceback" not in after and "Task was destroyed" not in after
    for rec in map(json.loads, filter(None, after.splitlines())):
        assert rec.get("level") != "error" and rec.get("status") != 500, rec
    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)


def test_data_dir_is_owner_only(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    bucket = f"modes-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(300_000))
    loose = []
    for dirpath, dirs, files in os.walk(cluster.data):
        for name in [*dirs, *files]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                if stat.S_IMODE(st.st_mode) & 0o077:
                    loose.append((p, oct(stat.S_IMODE(st.st_mode))))
    assert stat.S_IMODE(os.stat(cluster.data).st_mode) == 0o700
    assert loose == []


_SHARD_ID = re.compile(r"[0-9a-f]{32}\.[0-9]+")


def test_node_metrics_are_aggregate_counters_only(cluster: LocalCluster) -> None:
    """Decision: a node's /metrics stays open to scrapers (which must not hold the cluster
    secret, since it can forge shard writes), so it serves only aggregate counters."""
    s3 = cluster.client()
    bucket = f"metrics-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(3_000_000))
    part = cluster.manifest(bucket, "k").parts[0]
    toml = (cluster.data / "tessera.toml").read_text()
    node_id = next(n for n in part.nodes if n)
    address = re.search(rf'id = "{node_id}"[^\[]*?address = "([^"]+)"', toml, re.S)
    assert address is not None
    base = f"http://{address.group(1)}"
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:  # noqa: S310
        text = r.read().decode()
    assert not _SHARD_ID.search(text) and bucket not in text
    allowed_labels = {"op", "status", "where", "node_id", "zone", "le"}
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("tessera_node_"), fam.name
        for sample in fam.samples:
            assert set(sample.labels) <= allowed_labels, sample
    for path in ("/v1/health", "/v1/shards", "/v1/quarantine", "/v1/scrub"):
        try:
            urllib.request.urlopen(base + path, timeout=10)  # noqa: S310
            raise AssertionError(f"{path} answered without the cluster credential")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401, path
