"""`tessera up --workers 2`: two gateway processes serve S3 on one port (one shared socket,
taking turns by open connections: `gateway/balance.py`).

Worker 0 alone runs the admin API and the background workers and sums every worker's
metrics; the other workers exit with it. They share one view of node health
(`storage/sharedhealth.py`): the cluster probes once an hour, so nothing but a failed request
reveals a death; PUTs through worker 1 meet a killed zone (503) and mark its nodes down, and
the first PUT through worker 0, which never contacted them, places around them. Before the
view was shared, worker 0 placed two shards in the dead zone and answered 503.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from ops.admincli import admin_request
from storage.config import load_config
from storage.pids import pid_running
from tests.integration.cluster import LocalCluster, fetch

BUCKET = "worker-health"
ATTEMPTS = 256  # fresh connections tried to reach a given worker (the kernel picks one)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("workers") / "data", up_args=["--workers", "2"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TESSERA_HEALTH_PROBE_S", "3600")  # only requests reveal a death
            mp.setenv("TESSERA_ACCEPT_GRACE_S", "60")  # a loaded box never breaks the turns
            c.start()
        yield c
    finally:
        c.stop()


def _workers(parent: int) -> list[int]:
    """Pids of the gateway worker processes worker 0 (`parent`) started."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"--worker-index" in cmd:
            out.append(int(d))
    return out


def _metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(line_start))


def _held(port: int, pids: list[int]) -> list[int]:
    """How many established S3 connections each of `pids` holds (server ends on `port`)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1].endswith(f":{port:04X}") and f[3] == "01":
            inodes.add(f"socket:[{f[9]}]")
    counts = []
    for pid in pids:
        n = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
        counts.append(n)
    return counts


def test_long_lived_connections_are_split_evenly(cluster: LocalCluster) -> None:
    """A client's few keep-alive connections (boto3 keeps four) are shared evenly, whatever
    their ports hash to: each worker takes a connection only while it holds no more than
    the other. First in the module, so no other test's connections are open. With
    SO_REUSEPORT's hash sixteen connections stay within one of even 1 time in 256."""
    pids = [cluster.pid("gateway"), *_workers(cluster.pid("gateway"))]
    host, port = cluster.endpoint.removeprefix("http://").rsplit(":", 1)
    conns: list[http.client.HTTPConnection] = []
    try:
        for i in range(16):
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conns.append(conn)
            status = _request(cluster, conn, "PUT" if i == 0 else "HEAD", f"/{BUCKET}")[0]
            assert status in (200, 409) if i == 0 else status == 200
            counts = _held(int(port), pids)
            assert max(counts) - min(counts) <= 1, counts
    finally:
        for conn in conns:
            conn.close()


def test_workers_share_the_port_and_metrics_sum(cluster: LocalCluster) -> None:
    assert len(_workers(cluster.pid("gateway"))) == 1
    s3 = cluster.client(max_pool_connections=16)
    bucket = f"w-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    bodies = {f"k{i}": os.urandom(1000 + i) for i in range(48)}
    with ThreadPoolExecutor(8) as pool:  # many connections: the kernel spreads them
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      bodies.items()))
        got = dict(pool.map(lambda k: (k, s3.get_object(Bucket=bucket, Key=k)["Body"].read()),
                            bodies))
    assert got == bodies
    status, text = fetch(cluster.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    puts = _metric(text.decode(), 'tessera_s3_requests_total{op="PutObject",status="200"}')
    assert puts == len(bodies)  # every worker's count, summed by worker 0


def test_the_upload_budget_is_the_whole_gateways(cluster: LocalCluster) -> None:
    """`[gateway] upload_budget_bytes` bounds both workers together (each holds half), so
    the gateway's upload memory is what the setting says whatever the worker count."""
    setting = load_config(cluster.data / "tessera.toml").gateway.upload_budget_bytes
    status, text = fetch(cluster.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    limit = _metric(text.decode(), 'tessera_upload_budget_bytes{state="limit"}')
    assert limit == setting  # summed over the two workers (each had all of it before)


def test_background_workers_run_in_worker_zero_only(cluster: LocalCluster) -> None:
    log = (cluster.data / "logs" / "gateway.log").read_text()
    takers = {line.split("lease taken by ")[1].split(" ")[0]
              for line in log.splitlines() if "lease taken by" in line}
    assert takers and all(t.endswith(f"/{cluster.pid('gateway')}") for t in takers), takers


def _hexaddr(host: str, port: int) -> str:
    return f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"


def _server_pid(conn: http.client.HTTPConnection, pids: list[int]) -> int | None:
    """The gateway process holding the server end of `conn` (after one answered request)."""
    assert conn.sock is not None
    (chost, cport), (shost, sport) = conn.sock.getsockname(), conn.sock.getpeername()
    local, remote = _hexaddr(shost, sport), _hexaddr(chost, cport)
    inode = next(line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[1] == local and line.split()[2] == remote)
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def _request(c: LocalCluster, conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes = b"", creds: Credentials | None = None) -> tuple[int, bytes]:
    """One SigV4-signed request on this very connection (so on its worker), signed with
    `creds` (default: the cluster's tenant key)."""
    url = f"{c.endpoint}{path}"
    req = AWSRequest(method=method, url=url, data=body,
                     headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    creds = creds or Credentials(c.env["AWS_ACCESS_KEY_ID"], c.env["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(creds, "s3", c.env["AWS_DEFAULT_REGION"]).add_auth(req)
    conn.request(method, path, body=body or None, headers=dict(req.headers))
    r = conn.getresponse()
    return r.status, r.read()


def _connection_to(c: LocalCluster, pid: int, pids: list[int]) -> http.client.HTTPConnection:
    """A keep-alive connection that worker `pid` serves."""
    host, port = c.endpoint.removeprefix("http://").rsplit(":", 1)
    for _ in range(ATTEMPTS):
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        assert _request(c, conn, "HEAD", f"/{BUCKET}")[0] == 200
        if _server_pid(conn, pids) == pid:
            return conn
        conn.close()
    raise AssertionError(f"no connection reached gateway worker {pid}")


def test_a_bucket_change_one_worker_made_is_seen_by_the_other(cluster: LocalCluster) -> None:
    """Each worker keeps bucket records in memory (`storage/metadata/sharedgen.py`): a
    bucket created, reconfigured or deleted through one is seen by the other at once."""
    pids = [cluster.pid("gateway"), *_workers(cluster.pid("gateway"))]
    with contextlib.suppress(ClientError):
        cluster.client().create_bucket(Bucket=BUCKET)
    w0, w1 = (_connection_to(cluster, p, pids) for p in pids)
    name = "worker-buckets"
    assert _request(cluster, w1, "HEAD", f"/{name}")[0] == 404
    assert _request(cluster, w0, "PUT", f"/{name}")[0] == 200
    assert _request(cluster, w1, "HEAD", f"/{name}")[0] == 200
    assert b"<Status>" not in _request(cluster, w1, "GET", f"/{name}?versioning")[1]
    on = (b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
          b"<Status>Enabled</Status></VersioningConfiguration>")
    assert _request(cluster, w0, "PUT", f"/{name}?versioning", on)[0] == 200
    assert b"<Status>Enabled</Status>" in _request(cluster, w1, "GET", f"/{name}?versioning")[1]
    assert _request(cluster, w1, "PUT", f"/{name}/k", b"x")[0] == 200
    assert _request(cluster, w1, "PUT", f"/{name}/k", b"y")[0] == 200
    listing = _request(cluster, w0, "GET", f"/{name}?versions")[1]
    assert listing.count(b"<Version>") == 2  # both kept: worker 1 wrote under Enabled
    for vid in re.findall(rb"<VersionId>([^<]+)</VersionId>", listing):
        assert _request(cluster, w0, "DELETE", f"/{name}/k?versionId={vid.decode()}")[0] == 204
    assert _request(cluster, w0, "DELETE", f"/{name}")[0] == 204
    assert _request(cluster, w1, "HEAD", f"/{name}")[0] == 404


def test_an_object_change_one_worker_made_is_seen_by_the_other(cluster: LocalCluster) -> None:
    """Each worker keeps current object records in memory too: an object written,
    overwritten or deleted through one is read as it now is through the other at once."""
    pids = [cluster.pid("gateway"), *_workers(cluster.pid("gateway"))]
    with contextlib.suppress(ClientError):
        cluster.client().create_bucket(Bucket=BUCKET)
    w0, w1 = (_connection_to(cluster, p, pids) for p in pids)
    path = f"/{BUCKET}/worker-object"
    assert _request(cluster, w1, "GET", path)[0] == 404
    for body in (b"one", b"two", b"three"):
        assert _request(cluster, w0, "PUT", path, body)[0] == 200
        assert _request(cluster, w1, "GET", path) == (200, body)
        assert _request(cluster, w1, "GET", path) == (200, body)  # a cached read
    assert _request(cluster, w0, "DELETE", path)[0] == 204
    assert _request(cluster, w1, "GET", path)[0] == 404


def test_a_key_revoked_through_one_worker_is_refused_by_the_other_at_once(
        cluster: LocalCluster) -> None:
    """Each worker caches access keys (`storage/tenants.py`), valid only while the store's
    auth change stamp (`<file>.authgen`) holds: a key revoked through worker 0's admin API
    is refused by worker 1's very next request, though worker 1 used it just before."""
    pids = [cluster.pid("gateway"), *_workers(cluster.pid("gateway"))]
    with contextlib.suppress(ClientError):
        cluster.client().create_bucket(Bucket=BUCKET)
    keys = admin_request("GET", "/keys", env=cluster.env)
    tenant = next(k["tenant"] for k in keys["keys"]
                  if k["access_key_id"] == cluster.env["AWS_ACCESS_KEY_ID"])
    new = admin_request("POST", "/keys", {"tenant": tenant}, env=cluster.env)
    creds = Credentials(new["access_key_id"], new["secret_access_key"])
    w0, w1 = (_connection_to(cluster, p, pids) for p in pids)
    for conn in (w0, w1, w1):  # both workers have it cached
        assert _request(cluster, conn, "HEAD", f"/{BUCKET}", creds=creds)[0] == 200
    admin_request("DELETE", f"/keys/{new['access_key_id']}", env=cluster.env)
    for conn in (w1, w0):
        status, body = _request(cluster, conn, "PUT", f"/{BUCKET}/after-revoke", b"x",
                                creds=creds)
        assert (status, b"<Code>InvalidAccessKeyId</Code>" in body) == (403, True), body
    assert _request(cluster, w1, "GET", f"/{BUCKET}/after-revoke")[0] == 404


def test_a_death_one_worker_met_is_avoided_by_the_other(cluster: LocalCluster) -> None:
    pids = [cluster.pid("gateway"), *_workers(cluster.pid("gateway"))]
    assert len(pids) == 2
    cluster.client().create_bucket(Bucket=BUCKET)
    w0, w1 = (_connection_to(cluster, p, pids) for p in pids)
    body = os.urandom(64 * 1024)  # not inline: six shards, two per zone
    assert _request(cluster, w0, "PUT", f"/{BUCKET}/before", body)[0] == 200
    cfg = load_config(cluster.data / "tessera.toml")
    for n in cfg.nodes:
        if n.zone == "az3":
            cluster.kill(n.id)
    # Worker 1 learns the deaths from its own PUTs: each fails on the dead nodes it placed
    # shards on (marking them down) and either sends those shards to spares before its ack
    # or, when it cannot, fails (503); once it knows all three, a PUT needs no spare.
    needed = []
    for i in range(4):
        spared = _spared(cluster)
        status = _request(cluster, w1, "PUT", f"/{BUCKET}/learn-{i}", body)[0]
        assert status in (200, 503)
        needed.append(status == 503 or _spared(cluster) > spared)
        if not needed[-1]:
            break
    assert needed[0], "nobody knew at first: two of its six shards went to the dead zone"
    assert not needed[-1], "worker 1 kept placing shards on nodes it had seen die"
    # Worker 0 never contacted a dead node and will not probe for an hour: its first PUT
    # must place around them (4+2 spills onto the two live zones) from the shared view,
    # with no shard sent to a dead node and then to a spare.
    spared = _spared(cluster)
    status, text = _request(cluster, w0, "PUT", f"/{BUCKET}/second", body)
    assert status == 200, text
    assert _spared(cluster) == spared
    assert _request(cluster, w0, "GET", f"/{BUCKET}/second")[1] == body
    assert _request(cluster, w0, "GET", f"/{BUCKET}/before")[1] == body


def test_a_two_worker_gateway_stops_cleanly_on_sigterm(cluster: LocalCluster) -> None:
    """A second gateway of two workers over the same cluster, stopped as a supervisor
    stops it: it exits 0 with nothing said (worker 0 once closed the shared listening
    socket twice and reported a planned stop as "cannot start")."""
    import subprocess
    import sys

    from ops.localports import free_port

    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(cluster.data / "tessera.toml"),
         "--workers", "2", "--listen", f"127.0.0.1:{port}", "--admin-listen",
         f"127.0.0.1:{admin}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **cluster.env})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # its ready line: both workers serve, signals are handled
            if line.startswith("gateway ready on"):
                break
        assert proc.poll() is None, proc.communicate(timeout=60)[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "cannot start" not in err, err


def test_workers_exit_with_worker_zero(cluster: LocalCluster) -> None:
    parent = cluster.pid("gateway")
    children = _workers(parent)
    assert children
    os.kill(parent, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(pid_running(p) for p in children):
        assert time.monotonic() < deadline, "a gateway worker outlived worker 0"
        time.sleep(0.1)


def _answers(host: str, port: int) -> int:
    """The HTTP status an anonymous `GET /` gets from `host:port` (any S3 answer will do)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_two_workers_listen_on_every_address_once_their_cluster_is_open(
        cluster: LocalCluster) -> None:
    """`--workers 2 --listen :PORT` serves on IPv4 and IPv6 like one worker does (every
    address the host resolves to; it bound only the first), and its port refuses connections
    until a worker's cluster is open (it accepted them into the backlog before: a start-up
    that never finished left clients hanging). The cluster's open is held by a write lock
    on its SQLite file while a connection is tried."""
    import sqlite3
    import subprocess
    import sys

    from ops.localports import free_port

    port, admin = free_port(), free_port()
    db = sqlite3.connect(cluster.data / "meta" / "tessera.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")  # Cluster.open writes (schema): it waits for this
    locked = True
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(cluster.data / "tessera.toml"),
         "--workers", "2", "--listen", f":{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **cluster.env})
    try:
        deadline = time.monotonic() + 60
        while not _workers(proc.pid):  # worker 1 is started after the sockets are bound
            assert proc.poll() is None, proc.communicate(timeout=60)[1]
            assert time.monotonic() < deadline, "worker 1 was never started"
            time.sleep(0.02)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        db.execute("ROLLBACK")
        locked = False
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("gateway ready on"):
                break
        assert proc.poll() is None, proc.communicate(timeout=60)[1]
        assert _answers("127.0.0.1", port) == 403
        if socket.has_ipv6 and Path("/proc/net/if_inet6").exists():
            assert _answers("::1", port) == 403
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if locked:
            db.execute("ROLLBACK")
        db.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _spared(c: LocalCluster) -> float:
    """Shards the gateway's workers (summed) sent to a spare after a target failed."""
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    m = re.search(r"^tessera_write_shards_spared_total (\S+)$", text.decode(), re.M)
    assert m is not None, "no tessera_write_shards_spared_total"
    return float(m.group(1))
