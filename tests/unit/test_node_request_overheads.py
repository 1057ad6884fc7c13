"""The storage node's fixed cost per request (issue 17): the request log line, the request
metrics, the request id and the request MAC are made with less work per request, and each
still gives exactly what the step it replaces gave."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from nodes.app import _REQUEST_ID_RE, RequestIds
from nodes.logs import JsonLog
from nodes.metrics import NodeMetrics
from storage.shards import auth


def old_ts(now: float) -> str:
    """The log timestamp as the node wrote it before (strftime on every line)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def capture(name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, out


@given(st.lists(st.floats(min_value=0, max_value=4e9), min_size=1, max_size=20))
def test_log_timestamps_equal_strftime_of_every_line(times: list[float]) -> None:
    """The per-second cache gives the timestamp strftime gave, in any order of calls."""
    log = JsonLog("n1", logging.getLogger("tessera.test.ts"))
    for now in times:
        assert log._ts(now) == old_ts(now)


def test_log_line_is_one_json_object_without_a_caller_lookup(monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    """Same JSON fields as before; the record is made without `Logger.findCaller` (the
    stack walk the one-message-per-line format never used)."""
    logger, out = capture("tessera.test.line")

    def no_stack_walk(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("findCaller called")

    monkeypatch.setattr(logger, "findCaller", no_stack_walk)
    log = JsonLog("n7", logger)
    before = time.time()
    log.event(logging.INFO, "request", request_id="r1", status=201, path="/v1/x", size=None,
              extra=object.__name__)
    log.event(logging.DEBUG, "hidden", request_id="r2")  # below the level: not written
    log.warning("shard quarantined", shard_id="s")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and ", " not in lines[0]  # compact separators, one line each
    rec = json.loads(lines[0])
    assert list(rec) == ["ts", "level", "node_id", "msg", "request_id", "status", "path",
                         "size", "extra"]
    assert rec["level"] == "info" and rec["node_id"] == "n7" and rec["msg"] == "request"
    assert rec["status"] == 201 and rec["size"] is None and rec["extra"] == "object"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"])
    assert old_ts(before)[:19] <= rec["ts"][:19] <= old_ts(time.time())[:19]
    assert json.loads(lines[1])["level"] == "warning"


def samples(m: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(
            m.render({"used_bytes": 0, "free_bytes": 0, "shards": 0}).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_request_metrics_look_up_each_label_pair_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts and latency buckets as before, but `labels()` runs once per (op, status)."""
    m = NodeMetrics("n1", "az1")
    calls: list[tuple[str, ...]] = []
    real = m.requests.labels

    def counting(*a: Any, **k: Any) -> Any:
        calls.append(tuple(sorted(k.values())))
        return real(*a, **k)

    monkeypatch.setattr(m.requests, "labels", counting)
    for _ in range(3):
        m.observe_request("put", 201, 0.002)
    m.observe_request("put", 409, 0.02)
    m.observe_request("get", 200, 7.0)
    assert sorted(calls) == [("200", "get"), ("201", "put"), ("409", "put")]
    got = samples(m)
    put201 = (("op", "put"), ("status", "201"))
    assert got[("tessera_node_requests_total", put201)] == 3
    assert got[("tessera_node_requests_total", (("op", "put"), ("status", "409")))] == 1
    assert got[("tessera_node_request_seconds_count", put201)] == 3
    assert got[("tessera_node_request_seconds_sum", put201)] == pytest.approx(0.006)
    assert got[("tessera_node_request_seconds_bucket", (("le", "0.001"), *put201))] == 0
    assert got[("tessera_node_request_seconds_bucket", (("le", "0.0025"), *put201))] == 3
    get200 = (("le", "5.0"), ("op", "get"), ("status", "200"))
    assert got[("tessera_node_request_seconds_bucket", get200)] == 0


def test_generated_request_ids_are_unique_valid_and_differ_between_processes() -> None:
    """A random prefix per process and a counter: valid X-Request-Id values, never repeated
    within a life, and another life (another prefix) does not repeat them either."""
    one, two = RequestIds(), RequestIds()
    ids = [one() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(_REQUEST_ID_RE.match(i) for i in ids)
    prefix = ids[0].rsplit("-", 1)[0]
    assert len(prefix) == 16 and all(i.startswith(prefix + "-") for i in ids)
    assert not set(ids) & {two() for _ in range(5000)}


@given(st.binary(min_size=16, max_size=64), st.text(max_size=20), st.text(max_size=40),
       st.lists(st.tuples(st.sampled_from(["X-Tessera-Date", "X-Tessera-Nonce", "X-Other",
                                           "x-tessera-segments"]), st.text(max_size=20)),
                max_size=4))
def test_request_mac_is_the_hmac_object_value(secret: bytes, node_id: str, path: str,
                                              items: list[tuple[str, str]]) -> None:
    """The one-shot `hmac.digest` gives the MAC `hmac.new(...).hexdigest()` gave."""
    parts = [auth.SCHEME, node_id.encode(), b"PUT", path.encode(),
             *auth._signed_headers(items)]
    old = hmac.new(secret, b"\n".join(parts), hashlib.sha256).hexdigest()
    assert auth._mac(secret, node_id, "put", path, items) == old


NODE_LINES_CHILD = r"""
import json, logging, sys
from pathlib import Path
from nodes.logs import JsonLog, log_to_stderr
log_to_stderr(log_file=Path(sys.argv[1]))
built = []
real = logging.Logger.makeRecord
logging.Logger.makeRecord = lambda *a, **k: built.append(1) or real(*a, **k)
log = JsonLog("n1")
fields = {"request_id": "AB12", "method": "PUT", "path": "/v1/\u00e9 \"q\" \\ \u2028",
          "op": "put", "status": 201, "duration_ms": 1.5, "n": None}
log.info("request", **fields)
direct = len(built)
log.logger.addFilter(lambda record: True)  # a filter: through logging as usual
log.info("request", **fields)
print(json.dumps([direct, len(built)]), file=sys.__stdout__)
"""


def test_node_log_line_skips_the_record_and_writes_the_same_line(tmp_path: Path) -> None:
    """With the log file as the node logger's one unfiltered handler, a line is written
    without a LogRecord, byte for byte the line logging writes (but its time)."""
    path = tmp_path / "n.log"
    r = subprocess.run([sys.executable, "-c", NODE_LINES_CHILD, str(path)],
                       capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [0, 1]
    raw = path.read_text().splitlines()
    assert len(raw) == 2
    assert raw[0].split(",", 1)[1] == raw[1].split(",", 1)[1]
