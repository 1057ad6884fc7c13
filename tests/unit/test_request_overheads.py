"""Per-request and background costs kept off the hot path (issue 17, small objects): each
cached or skipped step still gives the exact result of the step it replaces."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.metrics_cluster import MAX_PAUSE_INTERVALS, PACE, ClusterGauges, usage_fields
from gateway.s3.request_keys import BUCKET_RECORD, ENDPOINT
from storage.config import NodeSpec
from storage.crypto import keys
from storage.crypto.keys import FileRootKey
from storage.errors import KeyUnavailable
from storage.health import STATS_ROUNDS, HealthTracker
from storage.metadata.sqlite import SqliteStore
from storage.records import FORMAT_VERSION, Bucket, ObjectVersion, PartLayout
from storage.tenants import TenantService


class CountingRoot:
    """The real file root key, counting how often a KEK is opened with it."""

    def __init__(self, path: Path) -> None:
        self.inner, self.unwraps = FileRootKey(path), 0

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        return self.inner.wrap(key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        self.unwraps += 1
        return self.inner.unwrap(wrapped, aad)


@pytest.mark.asyncio
async def test_current_kek_is_opened_once_and_follows_rotation_and_shred(tmp_path: Path,
                                                                         ) -> None:
    store = await SqliteStore.open(tmp_path / "m.db")
    root = CountingRoot(tmp_path / "root.key")
    try:
        tenants = TenantService(store, root)  # type: ignore[arg-type]
        await tenants.create("t")
        v1, k1 = await tenants.kek("t")
        opened = root.unwraps
        for _ in range(5):
            assert await tenants.kek("t") == (v1, k1)
        assert root.unwraps == opened  # the record still holds the blob k1 was opened from
        other = TenantService(store, root)  # type: ignore[arg-type]  # another process
        v2 = await other.rotate("t")
        v, k2 = await tenants.kek("t")  # the current version is read every time
        assert (v, k2) == (v2, keys.open_kek(root.inner, "t", v2,
                                             (await tenants.get("t")).keks[v2]))
        await other.shred("t")
        with pytest.raises(KeyUnavailable):
            await tenants.kek("t")
    finally:
        await store.close()


def test_records_encode_as_asdict_did() -> None:
    """The fast encoder writes the very bytes `asdict` + `packb` wrote (stored records);
    object records leave out their default fields (tests/unit/test_records_lean.py), and
    the bytes `asdict` wrote for them still decode alike."""
    part = PartLayout(number=1, size=4096, etag="e", stripe_id=b"\x01" * 16, k=4, m=2,
                      segment_size=1 << 20, nodes=["n1", None, "n3"], checksums={"CRC32": "x"},
                      inline=b"sealed")
    v = ObjectVersion(bucket="b", key="k\x00/é", version_id="null", tenant="t", size=4096,
                      etag="x" * 32, last_modified=1.5, parts=[part, part], dek=b"d" * 60,
                      acl={"owner": "t", "grants": [["user", "t", "FULL_CONTROL"]]},
                      lock={"mode": "GOVERNANCE", "until": 3.0}, restore={"days": 1})
    old = asdict(v)
    old["fv"] = FORMAT_VERSION
    for p in old["parts"]:
        del p["body_ref"]  # a part whose body is inside encodes as before the field existed
    assert ObjectVersion.decode(msgpack.packb(old, use_bin_type=True)) == v
    assert ObjectVersion.decode(v.encode()) == v
    assert len(v.encode()) < len(msgpack.packb(old, use_bin_type=True))
    apart = dataclasses.replace(part, body_ref="r1")  # a body kept apart is never stored
    stored = ObjectVersion.decode(dataclasses.replace(v, parts=[apart]).encode())
    assert (stored.parts[0].inline, stored.parts[0].body_ref) == (b"", "r1")
    b = Bucket(name="b", tenant="t", created=2.0, versioning="Enabled",
               config={"cors": [{"a": 1}]}, revision=7)
    old = asdict(b)
    del old["revision"], old["cached"]  # not stored (read state)
    old["fv"] = FORMAT_VERSION
    assert b.encode() == msgpack.packb(old, use_bin_type=True)


def test_usage_fields_match_a_full_decode() -> None:
    v = ObjectVersion(bucket="b", key="k", version_id="v", tenant="t9", size=123, etag="e",
                      last_modified=0.0, delete_marker=True)
    assert usage_fields(v.encode()) == ("t9", 123, True)


def test_cluster_gauges_pause_grows_with_a_slow_refresh() -> None:
    g = ClusterGauges.__new__(ClusterGauges)
    g._interval, g._took = 10.0, 0.01  # noqa: SLF001 - the pacing alone, no cluster needed
    assert g.pause_s() == 10.0
    g._took = 1.0  # noqa: SLF001
    assert g.pause_s() == PACE * 1.0
    g._took = 1000.0  # noqa: SLF001
    assert g.pause_s() == MAX_PAUSE_INTERVALS * 10.0


class CountingProbes:
    """A node transport answering health probes, counting them per node."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        self.calls[node.id] = self.calls.get(node.id, 0) + 1
        return {"used_bytes": 1, "free_bytes": 2, "shards": 3}


@pytest.mark.asyncio
async def test_probe_round_skips_nodes_that_just_answered_a_request(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("storage.health.time.monotonic", lambda: clock[0])
    nodes = [NodeSpec(id=f"n{i}", zone="az1", address=f"127.0.1.{i}:1") for i in range(3)]
    probes = CountingProbes()
    h = HealthTracker(nodes, probes, probe_interval_s=1.0)  # type: ignore[arg-type]
    await h.probe_once()
    assert probes.calls == {"n0": 1, "n1": 1, "n2": 1}
    for _ in range(STATS_ROUNDS):
        clock[0] += 1.0
        h.report_success("n0")  # a shard write answered by n0 within this interval
        await h.probe_once()
    assert probes.calls["n0"] == 1 and probes.calls["n1"] == 1 + STATS_ROUNDS
    clock[0] += 1.0
    h.report_success("n0")
    await h.probe_once()  # n0's disk figures are STATS_ROUNDS rounds old: probed again
    assert probes.calls["n0"] == 2
    h.report_failure("n0", "ConnectionRefused")
    await h.probe_once()  # a node not up is always probed (the probe brings it back)
    assert probes.calls["n0"] == 3 and h.is_usable("n0")


CHILD = """
import logging, sys
from pathlib import Path
from storage.logfile import log_handler

class Counting(logging.Formatter):
    calls = 0
    def format(self, record):
        Counting.calls += 1
        return super().format(record)

log = logging.getLogger("t")
log.addHandler(log_handler(Path(sys.argv[1]), Counting("%(message)s")))
log.setLevel(logging.INFO)
for i in range(300):
    log.info("line %04d %s", i, "x" * 60)
    if i == 100:
        print("x" * 3000, file=sys.stderr, flush=True)  # reaches the file behind the count
print(Counting.calls, file=sys.__stdout__)
"""


def test_log_records_are_formatted_once_and_rotation_counts_stderr(tmp_path: Path) -> None:
    """One format per record (the stdlib handler formats twice), and files still rotate at
    the size limit though prints reach the file through fd 2 without the handler."""
    log = tmp_path / "logs" / "g.log"
    env = {**os.environ, "TESSERA_LOG_MAX_BYTES": "8192", "TESSERA_LOG_BACKUPS": "3"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(log)], env=env, capture_output=True,
                       text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "300"
    for p in log.parent.iterdir():
        assert p.stat().st_size <= 8192 + 3200, p
    text = "".join(p.read_text() for p in log.parent.iterdir())
    assert "line 0299" in text


def _observed(method: str, path: str, record: Bucket | None,
              headers: dict[str, str] | None = None) -> list[Any]:
    """The access records `observe` queues for one finished request to `path` whose
    bucket record, as the request read it, was `record`."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from gateway.s3 import access_log
    from gateway.s3.router import parse_endpoint
    from storage.accesslog import AccessLogBuffer

    request = make_mocked_request(method, path, headers=CIMultiDict(headers or {}))
    request[ENDPOINT] = parse_endpoint(method, path, {}, "127.0.0.1", None,
                                            has_copy_source="x-amz-copy-source" in
                                            (headers or {}))
    request[BUCKET_RECORD] = record
    buffer = AccessLogBuffer(None, 100)  # type: ignore[arg-type]  # stage() is not called
    access_log.observe(buffer, request, web.Response(status=200), 0.0, 0.0, "h")
    return list(buffer._queue)  # noqa: SLF001


def test_access_records_are_made_only_for_buckets_that_log() -> None:
    """A bucket without a logging configuration costs its requests no access record (staging
    dropped them); a logging bucket, a bucket not read (absent) and a copy's source
    bucket still get theirs, as before."""
    quiet = Bucket(name="b", tenant="t", created=0.0)
    loud = Bucket(name="b", tenant="t", created=0.0,
                  config={"logging": {"target": "logs", "prefix": "", "since": 0.0}})
    assert _observed("GET", "/b/k", quiet) == []
    [rec] = _observed("GET", "/b/k", loud)
    assert (rec.bucket, rec.operation, rec.key) == ("b", "REST.GET.OBJECT", "k")
    [rec] = _observed("GET", "/b/k", None)
    assert rec.bucket == "b"
    [src] = _observed("PUT", "/b/k", quiet, {"x-amz-copy-source": "/src/a%20b"})
    assert (src.bucket, src.operation, src.key) == ("src", "REST.COPY.OBJECT_GET", "a%20b")
    recs = _observed("PUT", "/b/k", loud, {"x-amz-copy-source": "/src/x"})
    assert [(r.bucket, r.operation) for r in recs] == [("b", "REST.COPY.OBJECT"),
                                                       ("src", "REST.COPY.OBJECT_GET")]


LINES_CHILD = r"""
import json, logging, sys
from pathlib import Path
from gateway import logs
logs.setup("INFO", Path(sys.argv[1]))
log = logging.getLogger("tessera.access")
built = []
real = logging.Logger.makeRecord
logging.Logger.makeRecord = lambda *a, **k: built.append(1) or real(*a, **k)
fields = {"request_id": "AB12", "op": "PutObject", "method": "PUT",
          "path": "/b/\u00e9 \"q\" \\ \u2028", "status": 200, "duration_ms": 1.5, "n": None}
logs.info_line(log, "request", fields)
direct = len(built)
log.info("request", extra=fields)
seen = []
class Keep(logging.Handler):
    def emit(self, record):
        seen.append(record.path)
logging.getLogger().addHandler(Keep())  # another handler: through logging as usual
logs.info_line(log, "request", fields)
print(json.dumps([direct, len(built), seen]), file=sys.__stdout__)
"""


def test_request_log_line_skips_the_record_and_writes_the_same_line(tmp_path: Path) -> None:
    """The per-request line is written without a LogRecord when the log file is the one
    handler, byte for byte the line `logger.info(extra=)` writes (but its time), and goes
    through logging whenever another handler listens."""
    import json

    path = tmp_path / "g.log"
    r = subprocess.run([sys.executable, "-c", LINES_CHILD, str(path)], capture_output=True,
                       text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    direct, built, seen = json.loads(r.stdout)
    assert (direct, built) == (0, 2)
    assert seen == ["/b/\u00e9 \"q\" \\ \u2028"]
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3
    for x in lines:
        x.pop("ts")
    assert lines[0] == lines[1] == lines[2]
    raw = path.read_text().splitlines()
    assert raw[0].split(",", 1)[1] == raw[1].split(",", 1)[1] == raw[2].split(",", 1)[1]


def _body_request(length: int) -> tuple[Any, Any]:
    """A mocked upload request of `length` declared bytes whose body stream the test feeds."""
    from unittest import mock

    from aiohttp import streams
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from gateway.s3.body import RequestBody
    from gateway.s3.sigv4 import AuthResult

    protocol = mock.Mock(_reading_paused=False)
    payload = streams.StreamReader(protocol, 2 ** 16, loop=asyncio.get_running_loop())
    request = make_mocked_request("PUT", "/b/k", payload=payload,
                                  headers=CIMultiDict({"Content-Length": str(length)}))
    auth = AuthResult("ak", "us-east-1", "s3", (), "unsigned", "", b"", "", "", False, False)
    return RequestBody(request, auth, 1 << 30), payload


@pytest.mark.asyncio
async def test_a_buffered_body_is_read_without_arming_a_timer(monkeypatch) -> None:
    """A body already received (a small PUT's, with its headers) is taken as readany would
    return it, with no idle timer armed; a body still to come is waited for under the idle
    timeout, and a client that stalls gets RequestTimeout as before."""
    from gateway.s3 import body as body_mod
    from gateway.s3.errors import S3Error

    armed: list[float] = []
    real = asyncio.timeout
    monkeypatch.setattr(body_mod.asyncio, "timeout",
                        lambda s: armed.append(s) or real(s))  # type: ignore[func-returns-value]
    body, payload = _body_request(6)
    payload.feed_data(b"abc")
    payload.feed_data(b"def")
    payload.feed_eof()
    assert [c async for c in body] == [b"abcdef"]
    assert armed == [] and body.received == 6

    body, payload = _body_request(4)
    payload.feed_data(b"ab")
    loop = asyncio.get_running_loop()
    chunks = body.__aiter__()
    assert await chunks.__anext__() == b"ab"  # there already: no timer
    loop.call_soon(payload.feed_data, b"cd")  # arrives while the reader waits (timer 1)
    assert await chunks.__anext__() == b"cd"
    loop.call_soon(payload.feed_eof)  # the end, likewise waited for (timer 2); scheduled
    assert [c async for c in chunks] == []  # only now, so a slow loop cannot merge the two
    assert armed == [body_mod.BODY_IDLE_TIMEOUT_S] * 2

    monkeypatch.setattr(body_mod, "BODY_IDLE_TIMEOUT_S", 0.05)
    body, payload = _body_request(4)
    payload.feed_data(b"ab")
    with pytest.raises(S3Error) as err:
        _ = [c async for c in body]
    assert err.value.code == "RequestTimeout"


@given(st.floats(min_value=-2e9, max_value=3e11, allow_nan=False))
def test_http_date_is_formatdate(ts: float) -> None:
    """Last-Modified, built from the datetime directly, is email.utils.formatdate's string (clamped at the
    last HTTP date as before)."""
    import email.utils

    from gateway.s3.http import MAX_HTTP_TS, http_date

    assert http_date(ts) == email.utils.formatdate(min(ts, MAX_HTTP_TS), usegmt=True)


@given(st.text(alphabet="aZ09-_.~/%2Fé +?=&*!", max_size=40))
def test_canonical_uri_of_a_plain_path_is_the_per_segment_encoding(raw: str) -> None:
    """SigV4's canonical URI is the same string whether the plain-path shortcut or the
    per-segment re-encoding made it."""
    from urllib.parse import quote, unquote_to_bytes

    from gateway.s3.sigv4_canonical import canonical_uri

    path = raw.split("?", 1)[0] or "/"
    want = "/".join(quote(unquote_to_bytes(seg.encode("utf-8", "surrogateescape")),
                          safe="-_.~") for seg in path.split("/"))
    assert canonical_uri(raw) == want
