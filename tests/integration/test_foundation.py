"""Issue #2, end to end: a real `tessera up` cluster driven by boto3.

The clusters here run with `--inline-max-bytes 0`, so even 1-byte objects take the
erasure-coded path these tests are about (small objects inline by default: test_inline.py).

Objects of 0 B .. 64 MiB and ranges of them read back byte-identical; shards sit on six
distinct nodes, at most two per zone; no plaintext reaches the disk; a whole zone can die;
nodes refuse requests without the cluster credential; a restart keeps every object; and
errors have AWS's codes and shapes.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import psutil
import pytest
from botocore.exceptions import ClientError

from ops.botoconfig import no_retries
from tests.integration.cluster import LocalCluster, files_holding

MiB = 1024 * 1024
SEGMENT = MiB
EC_ONLY = ["--inline-max-bytes", "0"]  # tiny objects erasure-coded too


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """This module's shared cluster (shadows the session one): every object on shards."""
    c = LocalCluster(tmp_path_factory.mktemp("foundation") / "data", up_args=EC_ONLY).start()
    yield c
    c.stop()


SIZES = [0, 1, 1024, 5 * MiB + 1, 64 * MiB]
SMALL_SIZES = [0, 1, 1024, 5 * MiB + 1]
BUCKET = "foundation"
MARKER = b"<<TESSERA-PLAINTEXT-MARKER-7f3a>>"
CHUNK = MiB


# -- deterministic object bodies, streamed through a file --------------------------------------

@dataclass(frozen=True)
class Body:
    path: Path
    size: int
    sha256: str
    md5: str

    def slice_hash(self, start: int, end: int) -> str:
        """sha256 of bytes [start, end) without loading them all."""
        h = hashlib.sha256()
        with self.path.open("rb") as f:
            f.seek(start)
            left = end - start
            while left:
                chunk = f.read(min(CHUNK, left))
                assert chunk
                h.update(chunk)
                left -= len(chunk)
        return h.hexdigest()


def make_body(directory: Path, size: int, seed: int) -> Body:
    rnd = random.Random(seed)
    h, md5 = hashlib.sha256(), hashlib.md5()
    path = directory / f"body-{size}-{seed}"
    with path.open("wb") as f:
        left = size
        while left:
            chunk = rnd.randbytes(min(CHUNK, left))
            h.update(chunk)
            md5.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return Body(path, size, h.hexdigest(), md5.hexdigest())


def put(s3, bucket: str, key: str, body: Body) -> None:
    with body.path.open("rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f)


def get_hash(s3, bucket: str, key: str, **kw: str) -> tuple[str, int, dict]:
    resp = s3.get_object(Bucket=bucket, Key=key, **kw)
    h = hashlib.sha256()
    n = 0
    for chunk in resp["Body"].iter_chunks(CHUNK):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n, resp


def assert_identical(s3, bucket: str, key: str, body: Body) -> None:
    digest, n, resp = get_hash(s3, bucket, key)
    assert n == body.size == resp["ContentLength"], key
    assert digest == body.sha256, key


def ranges_for(size: int) -> list[tuple[str, int, int]]:
    """(Range header, start, end exclusive) cases for an object of `size` bytes."""
    out = [("bytes=0-0", 0, 1), (f"bytes={size - 1}-{size - 1}", size - 1, size),
           (f"bytes=-{min(size, 1000)}", size - min(size, 1000), size),
           (f"bytes={size // 2}-", size // 2, size),
           (f"bytes=-{size + 10}", 0, size),  # suffix longer than the object: all of it
           (f"bytes={max(0, size - 5)}-{size + 100}", max(0, size - 5), size)]  # end clamped
    if size > 2:
        out.append((f"bytes=1-{size - 2}", 1, size - 1))
    for boundary in range(SEGMENT, size, SEGMENT)[:3]:
        out.append((f"bytes={boundary - 100}-{boundary + 99}", boundary - 100, boundary + 100))
        out.append((f"bytes={boundary - 1}-{boundary}", boundary - 1, boundary + 1))
    if size > 3 * SEGMENT:  # across two boundaries, starting and ending mid-segment
        out.append((f"bytes={SEGMENT - 7}-{3 * SEGMENT + 6}", SEGMENT - 7, 3 * SEGMENT + 7))
    return out


# -- cluster inspection --------------------------------------------------------------------------

def node_zones(c: LocalCluster) -> dict[str, str]:
    cfg = tomllib.loads((c.data / "tessera.toml").read_text())
    return {n["id"]: n["zone"] for n in cfg["nodes"]}


def shards_by_stripe(c: LocalCluster) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for node, files in c.shard_files().items():
        for f in files:
            stripe, _, index = f.name.partition(".")
            if len(stripe) == 32 and index.isdigit():
                out.setdefault(stripe, []).append((node, int(index)))
    return out


def node_request(c: LocalCluster, method: str, path: str, headers: dict[str, str] | None = None,
                 data: bytes | None = None) -> int:
    req = urllib.request.Request(f"http://127.0.1.1:{c.node_port}{path}", method=method,
                                 data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_refused(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Poll until nothing listens on host:port any more (a killed node's socket is gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"{host}:{port} still accepts connections")


def error_of(call, *args, **kw) -> tuple[str, int, dict]:
    with pytest.raises(ClientError) as exc:
        call(*args, **kw)
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Body]:
    d = tmp_path_factory.mktemp("bodies")
    return {size: make_body(d, size, seed=1000 + i) for i, size in enumerate(SIZES)}


@pytest.fixture(scope="module")
def stored(cluster: LocalCluster, bodies: dict[int, Body]) -> Iterator[dict[str, Body]]:
    s3 = cluster.client()
    s3.create_bucket(Bucket=BUCKET)
    objects = {}
    for size, body in bodies.items():
        key = f"obj/{size}"
        put(s3, BUCKET, key, body)
        objects[key] = body
    yield objects


# -- tests on the shared cluster -----------------------------------------------------------------

def test_objects_read_back_identical(cluster: LocalCluster, stored: dict[str, Body]) -> None:
    s3 = cluster.client()
    for key, body in stored.items():
        assert_identical(s3, BUCKET, key, body)
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == body.size
        assert head["ETag"] == f'"{body.md5}"'  # single PUT: MD5 of the plaintext


@pytest.mark.parametrize("size", [s for s in SIZES if s])
def test_ranges_read_back_identical(cluster: LocalCluster, stored: dict[str, Body],
                                    size: int) -> None:
    s3 = cluster.client()
    body = stored[f"obj/{size}"]
    for header, start, end in ranges_for(size):
        digest, n, resp = get_hash(s3, BUCKET, f"obj/{size}", Range=header)
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 206, header
        assert resp["ContentRange"] == f"bytes {start}-{end - 1}/{size}", header
        assert n == end - start == resp["ContentLength"], header
        assert digest == body.slice_hash(start, end), header


def test_unparsable_range_returns_whole_object(cluster: LocalCluster,
                                               stored: dict[str, Body]) -> None:
    """S3 ignores a syntactically invalid range (here end < start) and answers 200."""
    digest, n, resp = get_hash(cluster.client(), BUCKET, "obj/1024", Range="bytes=9-3")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert (n, digest) == (1024, stored["obj/1024"].sha256)


def test_range_on_empty_object_is_invalid(cluster: LocalCluster, stored: dict[str, Body]) -> None:
    code, status, _ = error_of(cluster.client().get_object, Bucket=BUCKET, Key="obj/0",
                               Range="bytes=0-0")
    assert (code, status) == ("InvalidRange", 416)


def test_shards_on_six_distinct_nodes_at_most_two_per_zone(cluster: LocalCluster,
                                                           stored: dict[str, Body]) -> None:
    zones = node_zones(cluster)
    standard = {f"n{i}": f"az{(i - 1) // 3 + 1}" for i in range(1, 10)}
    assert {n: z for n, z in zones.items() if n in standard} == standard
    on_disk = shards_by_stripe(cluster)
    for key, body in stored.items():
        v = cluster.manifest(BUCKET, key)
        assert v.size == body.size
        if body.size == 0:
            assert all(not any(p.nodes) for p in v.parts), "a 0-byte object has no shards"
            assert not any(p.stripe_id.hex() in on_disk for p in v.parts)
            continue
        stripes = [p for p in v.parts if p.stripe_id]
        assert len(stripes) == 1, key  # one stripe per part: a handful of files, not thousands
        part = stripes[0]
        assert (part.k, part.m) == (4, 2)
        files = on_disk.get(part.stripe_id.hex(), [])
        assert sorted(i for _, i in files) == list(range(6)), (key, files)
        nodes = [n for n, _ in files]
        assert len(set(nodes)) == 6, (key, files)
        per_zone: dict[str, int] = {}
        for n in nodes:
            per_zone[zones[n]] = per_zone.get(zones[n], 0) + 1
        assert max(per_zone.values()) <= 2, (key, per_zone)
        assert {i: n for n, i in files} == dict(enumerate(part.nodes)), "manifest != disk"


def test_no_plaintext_under_the_data_dir(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    s3.create_bucket(Bucket="plaintext-probe")
    big = (MARKER * (MiB // len(MARKER) + 1))[:MiB]
    s3.put_object(Bucket="plaintext-probe", Key="big", Body=big)
    s3.put_object(Bucket="plaintext-probe", Key="small", Body=MARKER + b" tiny object")
    s3.put_object(Bucket="plaintext-probe", Key="meta", Body=b"x",
                  Metadata={"note": "metadata is not secret"})
    assert s3.get_object(Bucket="plaintext-probe", Key="big")["Body"].read() == big
    files = [p for p in cluster.data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files) and any(p.suffix == ".log" for p in files)
    assert sum(1 for p in files if "shards" in p.parts) >= 6
    leaked = files_holding(cluster.data, [MARKER])
    assert not leaked, f"plaintext found in {leaked}"
    assert files_holding(cluster.data, [b"[profiles.standard]"])  # the search works


def test_node_refuses_requests_without_cluster_credential(cluster: LocalCluster) -> None:
    assert node_request(cluster, "GET", "/v1/health") == 401
    sid = "0" * 32 + ".0"
    assert node_request(cluster, "PUT", f"/v1/shards/{sid}", data=b"junk") == 401
    assert node_request(cluster, "GET", f"/v1/shards/{sid}") == 401
    assert node_request(cluster, "DELETE", f"/v1/shards/{sid}") == 401
    assert node_request(cluster, "GET", "/v1/shards") == 401
    forged = {"X-Tessera-Date": "1", "X-Tessera-Nonce": "ab", "X-Tessera-Auth": "00" * 32}
    assert node_request(cluster, "GET", "/v1/health", headers=forged) == 401
    forged["X-Tessera-Date"] = str(int(time.time()))
    assert node_request(cluster, "PUT", f"/v1/shards/{sid}", headers=forged, data=b"x") == 401


def test_everything_lives_under_the_data_dir(cluster: LocalCluster) -> None:
    data = cluster.data.resolve()
    top = {p.name for p in data.iterdir()}
    assert {"tessera.toml", "tessera.env", "nodes", "meta", "logs", "secrets", "run"} <= top
    assert sorted(p.name for p in (data / "nodes").iterdir()) == sorted(node_zones(cluster))
    assert (data / "secrets").stat().st_mode & 0o077 == 0
    assert tomllib.loads((data / "tessera.toml").read_text())["data_dir"] == str(data)
    procs = [psutil.Process(cluster.pid(n)) for n in ["gateway", *node_zones(cluster)]]
    for proc in procs:
        for f in proc.open_files():
            p = Path(f.path)
            if p.is_relative_to("/proc") or p.is_relative_to("/dev"):
                continue
            assert p.resolve().is_relative_to(data), f"{proc.pid} has {p} open"
        assert Path(proc.cwd()).resolve() != Path("/")


def test_error_shapes(cluster: LocalCluster, stored: dict[str, Body]) -> None:
    s3 = cluster.client()
    code, status, r = error_of(s3.get_object, Bucket=BUCKET, Key="no/such/key")
    assert (code, status) == ("NoSuchKey", 404)
    assert r["ResponseMetadata"]["RequestId"]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    assert r["Error"]["Key"] == "no/such/key"
    code, status, r = error_of(s3.get_object, Bucket="no-such-bucket-x", Key="k")
    assert (code, status) == ("NoSuchBucket", 404)
    assert r["Error"]["BucketName"] == "no-such-bucket-x"
    code, status, r = error_of(s3.get_object, Bucket=BUCKET, Key="obj/1024",
                               Range="bytes=5000-6000")
    assert (code, status) == ("InvalidRange", 416)
    assert r["Error"]["ActualObjectSize"] == "1024"
    bad = boto3.client("s3", endpoint_url=cluster.endpoint,
                       aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key="wrong" + cluster.env["AWS_SECRET_ACCESS_KEY"],
                       region_name=cluster.env["AWS_DEFAULT_REGION"], config=no_retries())
    code, status, r = error_of(bad.get_object, Bucket=BUCKET, Key="obj/1")
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    assert r["ResponseMetadata"]["RequestId"]
    code, status, _ = error_of(bad.list_buckets)
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    unknown = boto3.client("s3", endpoint_url=cluster.endpoint, aws_access_key_id="AKIANOSUCHKEY",
                           aws_secret_access_key="x" * 40,
                           region_name=cluster.env["AWS_DEFAULT_REGION"],
                           config=no_retries())
    code, status, _ = error_of(unknown.list_buckets)
    assert (code, status) == ("InvalidAccessKeyId", 403)
    code, status, r = error_of(s3.delete_bucket, Bucket=BUCKET)
    assert (code, status) == ("BucketNotEmpty", 409)
    assert r["Error"]["BucketName"] == BUCKET
    code, status, _ = error_of(s3.head_object, Bucket=BUCKET, Key="no/such/key")
    assert status == 404
    # us-east-1 keeps its legacy answer: re-creating a bucket you own is 200 OK.
    assert s3.create_bucket(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200


# -- tests with a cluster of their own -----------------------------------------------------------

@pytest.fixture(scope="module")
def small_bodies(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Body]:
    d = tmp_path_factory.mktemp("small-bodies")
    return {size: make_body(d, size, seed=2000 + i) for i, size in enumerate(SMALL_SIZES)}


def test_restart_keeps_every_object(cluster: LocalCluster,
                                    small_bodies: dict[int, Body]) -> None:
    """The module's cluster stopped and started again (after the tests above, which it
    must not disturb; the zone test below, last, kills a zone of it)."""
    s3 = cluster.client()
    s3.create_bucket(Bucket="restart")
    for size, body in small_bodies.items():
        put(s3, "restart", f"k/{size}", body)
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "restart" in buckets
    env = dict(cluster.env)
    port, node_port = cluster.port, cluster.node_port
    cluster.stop()
    cluster.start()
    assert (cluster.port, cluster.node_port) == (port, node_port)
    assert cluster.env == env  # same credentials: bootstrap ran once
    s3 = cluster.client()
    for size, body in small_bodies.items():
        assert_identical(s3, "restart", f"k/{size}", body)
    listed = s3.list_objects_v2(Bucket="restart")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(f"k/{s}" for s in SMALL_SIZES)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == buckets
    s3.put_object(Bucket="restart", Key="new", Body=b"after restart")
    assert s3.get_object(Bucket="restart", Key="new")["Body"].read() == b"after restart"
    # Bit rot in a data shard on disk: the frame checksum catches it and the read degrades.
    big = SMALL_SIZES[-1]
    part = cluster.manifest("restart", f"k/{big}").parts[0]
    node = part.nodes[0]
    assert node is not None
    (path,) = [f for f in cluster.shard_files()[node]
               if f.name == f"{part.stripe_id.hex()}.0"]
    path.flip(path.size // 2, 0x04)
    assert_identical(s3, "restart", f"k/{big}", small_bodies[big])


def test_a_whole_zone_can_die(cluster: LocalCluster,
                              small_bodies: dict[int, Body]) -> None:
    """SIGKILL every node of az1: old objects read back, and new PUTs still succeed. Last
    test on the module's cluster: its zone stays dead."""
    s3 = cluster.client()
    s3.create_bucket(Bucket="zone")
    for size, body in small_bodies.items():
        put(s3, "zone", f"before/{size}", body)
    cfg = tomllib.loads((cluster.data / "tessera.toml").read_text())
    az1 = [n for n in cfg["nodes"] if n["zone"] == "az1"]
    assert {"n1", "n2", "n3"} <= {n["id"] for n in az1}
    for node in az1:  # every node of az1, SIGKILL
        cluster.kill(node["id"])
    for node in az1:
        host, _, port = node["address"].rpartition(":")
        wait_refused(host, int(port))
    for size, body in small_bodies.items():
        assert_identical(s3, "zone", f"before/{size}", body)
        if size:
            last = f"bytes={size - 1}-{size - 1}"
            assert get_hash(s3, "zone", f"before/{size}", Range=last)[0] == \
                body.slice_hash(size - 1, size)
    for size, body in small_bodies.items():
        put(s3, "zone", f"after/{size}", body)
    for size, body in small_bodies.items():
        assert_identical(s3, "zone", f"after/{size}", body)
    zones = node_zones(cluster)
    on_disk = shards_by_stripe(cluster)
    for size in SMALL_SIZES[1:]:
        part = cluster.manifest("zone", f"after/{size}").parts[0]
        placed = [n for n in part.nodes if n]
        assert len(placed) >= 5 and len(set(placed)) == len(placed)  # write quorum k+1
        assert {zones[n] for n in placed} == {"az2", "az3"}
        assert len(on_disk[part.stripe_id.hex()]) == len(placed)


def test_body_generation_is_deterministic(tmp_path: Path) -> None:
    a = make_body(tmp_path, 3 * MiB + 5, seed=7)
    os.rename(a.path, tmp_path / "first")
    b = make_body(tmp_path, 3 * MiB + 5, seed=7)
    assert a.sha256 == b.sha256
