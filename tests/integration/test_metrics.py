"""Metrics worth graphing (issue 15 section 3), scraped from a real cluster's gateway and nodes:
per-operation latency, per-stage pipeline time, metadata latency, cluster gauges refreshed from
the workers' figures, and a Grafana dashboard whose every query names an exposed metric."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)
METRIC_NAME = re.compile(r"\btessera_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
REFRESH_DEADLINE_S = 120.0  # the cluster gauges refresh every metrics_refresh_s (10 s)
SIZE = 3_000_000  # several segments: the streaming path, not an inline or small write


@dataclass
class Scrape:
    text: str

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        total = 0.0
        for m in SAMPLE.finditer(self.text):
            if m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def samples(self, name: str) -> list[dict[str, str]]:
        """The label sets of the samples of `name`."""
        return [dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                for m in SAMPLE.finditer(self.text) if m.group(1) == name]

    def names(self) -> set[str]:
        """Every series name exposed, with those of declared families that have no sample yet
        (a labelled counter such as checksum failures before the first failure)."""
        names = {m.group(1) for m in SAMPLE.finditer(self.text)}
        for fam, kind in re.findall(r"^# TYPE (\S+) (\S+)", self.text, re.M):
            names |= {f"{fam}{s}" for s in SUFFIXES.get(kind, ("",))}
        return names


def _scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # noqa: S310
        return Scrape(r.read().decode())


def _gateway(cluster: LocalCluster) -> Scrape:
    return _scrape(f"http://127.0.0.1:{cluster.admin_port}")


def _node_url(cluster: LocalCluster) -> str:
    toml = (cluster.data / "tessera.toml").read_text()
    address = re.search(r'address = "([^"]+)"', toml)
    assert address is not None
    return f"http://{address.group(1)}"


@dataclass
class Traffic:
    before: Scrape
    after: Scrape
    bucket: str
    started: float


@pytest.fixture(scope="module")
def traffic(cluster: LocalCluster) -> Traffic:
    """One PUT and one GET of a multi-segment object, with scrapes before and after."""
    s3 = cluster.client()
    bucket = f"metrics-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    before = _gateway(cluster)
    started = time.time()
    body = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key="obj", Body=body)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == body
    return Traffic(before, _gateway(cluster), bucket, started)


def test_put_and_get_move_the_op_histograms_and_stage_timings(traffic: Traffic) -> None:
    b, a = traffic.before, traffic.after
    for op in ("PutObject", "GetObject"):
        assert a.value("tessera_s3_request_seconds_count", op=op) >= \
            b.value("tessera_s3_request_seconds_count", op=op) + 1, op
        assert a.value("tessera_s3_request_seconds_bucket", op=op, le="+Inf") >= \
            b.value("tessera_s3_request_seconds_bucket", op=op, le="+Inf") + 1, op
    # no "erasure_decode": a read with the k data blocks decrypts straight from them
    # (`StripeCodec.open_into`); only a degraded segment decodes
    for stage in ("hash", "encrypt", "erasure_encode", "shard_write", "metadata_commit",
                  "shard_read", "decrypt"):
        assert a.value("tessera_pipeline_stage_seconds_count", stage=stage) > \
            b.value("tessera_pipeline_stage_seconds_count", stage=stage), stage
        assert a.value("tessera_pipeline_stage_seconds_sum", stage=stage) > \
            b.value("tessera_pipeline_stage_seconds_sum", stage=stage), stage
    for op in ("get", "txn"):
        assert a.value("tessera_metadata_op_seconds_count", op=op) > \
            b.value("tessera_metadata_op_seconds_count", op=op), op
    assert a.value("tessera_tenant_requests_total") >= \
        b.value("tessera_tenant_requests_total") + 2


def test_put_and_get_count_the_object_bytes_in_and_out(traffic: Traffic) -> None:
    """The console's throughput chart and a dashboard read these counters: a PUT and a GET of
    SIZE bytes must move each by at least SIZE (newuser15: both stayed 0.0)."""
    b, a = traffic.before, traffic.after
    assert a.value("tessera_s3_bytes_in_total") >= b.value("tessera_s3_bytes_in_total") + SIZE
    assert a.value("tessera_s3_bytes_out_total") >= b.value("tessera_s3_bytes_out_total") + SIZE


def _refreshed_after(cluster: LocalCluster, t: float) -> Scrape:
    """The first scrape whose cluster gauges were computed after `t` (polls the refresh)."""
    deadline = time.monotonic() + REFRESH_DEADLINE_S
    while True:
        s = _gateway(cluster)
        if s.value("tessera_metrics_refresh_timestamp_seconds") > t:
            return s
        assert time.monotonic() < deadline, "cluster gauges were not refreshed"
        time.sleep(0.5)


def test_cluster_gauges_show_stripes_usage_backlogs_and_leases(
        cluster: LocalCluster, traffic: Traffic) -> None:
    s = _refreshed_after(cluster, time.time())
    assert s.value("tessera_tenant_bytes") >= SIZE
    assert s.value("tessera_tenant_objects") >= 1
    assert s.value("tessera_stripes_scanned") >= 1
    assert s.value("tessera_stripes_by_healthy_shards") == s.value("tessera_stripes_scanned")
    assert s.value("tessera_nodes") == 15  # by state; other tests may have a node down
    for name in ("tessera_repair_backlog", "tessera_gc_backlog", "tessera_rebalance_backlog",
                 "tessera_restore_backlog", "tessera_repair_bytes_rebuilt_total",
                 "tessera_rebalance_bytes_moved_total", "tessera_scrub_shards_verified_total"):
        assert name in s.names(), name
    # repair's refusals, each with its help and type (final-s18: only in `tessera status`)
    for fam, kind in (("tessera_repair_rebuilds_refused_total", "counter"),
                      ("tessera_repair_sources_disagree_total", "counter"),
                      ("tessera_repair_stripes_refused_alarm", "gauge")):
        assert re.search(rf"^# HELP {fam} \S", s.text, re.M), fam
        assert f"# TYPE {fam} {kind}\n" in s.text, fam
    leases = s.samples("tessera_worker_lease")
    assert {x["worker"] for x in leases} >= {"repair", "gc", "rebalance", "lifecycle"}
    pid = cluster.pid("gateway")
    for x in leases:  # held here exactly when the holder is this gateway process
        held = s.value("tessera_worker_lease_held", worker=x["worker"])
        assert held == float(x["holder"].endswith(f"/{pid}")), x


def test_dashboard_queries_name_metrics_a_running_cluster_exposes(
        cluster: LocalCluster, traffic: Traffic) -> None:
    exposed = _refreshed_after(cluster, traffic.started).names() | \
        _scrape(_node_url(cluster)).names()
    dash = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    assert dash["panels"]
    missing = []
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = METRIC_NAME.findall(target["expr"])
            assert names, (panel["title"], target["expr"])
            missing += [f'{panel["title"]}: {n}' for n in names if n not in exposed]
    assert missing == []


def test_prometheus_example_scrapes_the_gateway_admin_port_and_the_nodes() -> None:
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"tessera-gateway", "tessera-node"}
    nodes = [t for sc in jobs["tessera-node"]["static_configs"] for t in sc["targets"]]
    assert len(nodes) == 15 and all(t.endswith(":9100") for t in nodes)
    assert jobs["tessera-gateway"]["static_configs"][0]["targets"] == ["127.0.0.1:9001"]
