"""Prometheus metrics of the gateway, in a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tessera_s3_requests", "S3 requests by operation and status",
                                ["op", "status"], registry=r)
        self.latency = Histogram("tessera_s3_request_seconds", "S3 request latency",
                                 ["op"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("tessera_s3_bytes_in", "S3 request body bytes received", registry=r)
        self.bytes_out = Counter("tessera_s3_bytes_out", "S3 response body bytes sent", registry=r)
        self.tenant_requests = Counter("tessera_tenant_requests",
                                       "Authorized S3 requests by the bucket's tenant",
                                       ["tenant"], registry=r)
        from gateway.metrics_export import (
            AccessLogCollector,
            AuditCollector,
            LifecycleCollector,
            TimingsCollector,
        )
        from storage.telemetry import METADATA, STAGES

        r.register(TimingsCollector("tessera_pipeline_stage_seconds",
                                    "Seconds spent per data-path stage (per segment)",
                                    "stage", STAGES))
        r.register(TimingsCollector("tessera_metadata_op_seconds",
                                    "Metadata store call latency by method", "op", METADATA))
        r.register(LifecycleCollector())
        r.register(AccessLogCollector())
        r.register(AuditCollector())
        # The labelled children, looked up once each (`labels()` hashes and locks per call).
        self._req_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._tenant_children: dict[str, Any] = {}

    def watch_cluster(self, collector: object) -> None:
        """Export the cached cluster gauges (`gateway.metrics_cluster.ClusterGauges`)."""
        self.registry.register(collector)  # type: ignore[arg-type]

    def tenant_request(self, tenant: str) -> None:
        child = self._tenant_children.get(tenant)
        if child is None:
            child = self._tenant_children[tenant] = self.tenant_requests.labels(tenant=tenant)
        child.inc()

    def watch_integrity(self, found: Callable[[], Mapping[str, int]]) -> None:
        """Export `tessera_lying_shards_found_total{where}`: lying shards (valid checksums,
        wrong bytes) this gateway's reads ("read") and deep scrub ("scrub") found."""
        self.registry.register(_LyingCollector(found))

    def watch_uploads(self, budget: Any) -> None:
        """Export the upload budget (`storage.uploadbudget.UploadBudget`): bytes reserved
        now, the most at once, the limit, and how many writes waited for it."""
        self.registry.register(_UploadBudgetCollector(budget))

    def watch_writes(self, spares: Any) -> None:
        """Export `tessera_write_shards_spared_total` and `tessera_writes_degraded_total`
        (`storage.spares.Spares`'s counts)."""
        self.registry.register(_WriteShortfallCollector(spares))

    def watch_auth_stamp(self, state: Callable[[], Mapping[str, Any]]) -> None:
        """Export the etcd auth stamp watch (`storage.metadata.etcd_stamp.WatchedStamp`):
        `tessera_auth_stamp_unconfirmed` (1 per worker whose requests read the stamp now
        because the watch is not confirmed, summed; an idle worker reads nothing: 0)
        and `tessera_auth_stamp_reads_total` (requests that read the stamp from etcd)."""
        self.registry.register(_AuthStampCollector(state))

    def watch_commit_sharing(self, state: Callable[[], Mapping[str, int]]) -> None:
        """Export how etcd commits left this worker (`storage.metadata.etcd_share`):
        `tessera_etcd_commits_forwarded_total` (sent to worker 0's batcher) and
        `tessera_etcd_commits_direct_total` (sent to etcd itself while worker 0 could not
        be reached)."""
        self.registry.register(_CommitSharingCollector(state))

    def transferred(self, received: int, sent: int) -> None:
        """Count one request's body bytes: received (its declared length) and sent (the
        response's length; 0 for HEAD). Once per request, not per chunk."""
        if received:
            self.bytes_in.inc(received)
        if sent:
            self.bytes_out.inc(sent)

    def request(self, op: str, status: int, seconds: float) -> None:
        children = self._req_children.get((op, status))
        if children is None:
            children = self._req_children[(op, status)] = (
                self.requests.labels(op=op, status=str(status)), self.latency.labels(op=op))
        children[0].inc()
        children[1].observe(seconds)

    def render(self, names: Iterable[str] = ()) -> bytes:
        """The exposition; with `names`, only those samples (Prometheus' `name[]`), which
        collects only the metrics that have them."""
        names = list(names)
        return generate_latest(self.registry.restricted_registry(names) if names
                               else self.registry)


class _LyingCollector:
    """Reads the storage library's counters at scrape time (no second copy to keep in sync)."""

    def __init__(self, found: Callable[[], Mapping[str, int]]) -> None:
        self._found = found

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily("tessera_lying_shards_found",
                                    "Shards with valid checksums but wrong bytes, by finder",
                                    labels=["where"])]

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("tessera_lying_shards_found",
                                  "Shards with valid checksums but wrong bytes, by finder",
                                  labels=["where"])
        found = self._found()
        for where in sorted({"read", "scrub", *found}):
            fam.add_metric([where], float(found.get(where, 0)))
        yield fam


class _UploadBudgetCollector:
    """The upload budget's figures at scrape time (summed over workers like every gauge)."""

    def __init__(self, budget: Any) -> None:
        self._budget = budget

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        b = self._budget
        fam = GaugeMetricFamily("tessera_upload_budget_bytes",
                                "Upload segment and frame bytes: reserved now, most at once, limit",
                                labels=["state"])
        for state, value in (("in_use", b.in_use), ("peak", b.peak), ("limit", b.limit)):
            fam.add_metric([state], float(value))
        yield fam
        yield CounterMetricFamily("tessera_upload_budget_waits",
                                  "Writes that waited for the upload budget", value=b.waited)


class _WriteShortfallCollector:
    """Shard writes that failed on the way to an acknowledgement, at scrape time."""

    def __init__(self, spares: Any) -> None:
        self._spares = spares

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        s = self._spares
        yield CounterMetricFamily("tessera_write_shards_spared",
                                  "Shards whose target failed during a write, sent to a spare "
                                  "node before the write was acknowledged", value=s.spared)
        yield CounterMetricFamily("tessera_writes_degraded",
                                  "Writes acknowledged with fewer than k+m shards (no usable "
                                  "spare node; queued first for repair)", value=s.degraded)


class _AuthStampCollector:
    """The auth stamp watch's state at scrape time."""

    def __init__(self, state: Callable[[], Mapping[str, Any]]) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        s = self._state()
        yield GaugeMetricFamily("tessera_auth_stamp_unconfirmed",
                                "Gateway workers whose requests read the etcd auth stamp now "
                                "(the watch is not confirmed; idle workers are not counted)",
                                value=1.0 if s["state"] == "reading" else 0.0)
        yield CounterMetricFamily("tessera_auth_stamp_reads",
                                  "Requests that read the auth stamp from etcd (the watch "
                                  "could not answer)", value=float(s["reads"]))


class _CommitSharingCollector:
    """The commit sharing's counts at scrape time."""

    def __init__(self, state: Callable[[], Mapping[str, int]]) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        s = self._state()
        yield CounterMetricFamily("tessera_etcd_commits_forwarded",
                                  "etcd commits a gateway worker sent to worker 0's batcher",
                                  value=float(s["forwarded"]))
        yield CounterMetricFamily("tessera_etcd_commits_direct",
                                  "etcd commits a gateway worker sent to etcd itself while "
                                  "worker 0 could not be reached", value=float(s["direct"]))


def merge_expositions(texts: list[bytes]) -> bytes:
    """One exposition of several gateway worker processes: samples with the same name and
    labels are summed (counters, histograms, the per-process gauges), `*_created`
    timestamps keep the earliest, so scrapes read as from one process."""
    from prometheus_client.parser import text_string_to_metric_families

    fams: dict[str, Metric] = {}
    where: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], int]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text.decode()):
            mine = fams.get(fam.name)
            if mine is None:
                fams[fam.name] = fam
                where[fam.name] = {(s.name, tuple(sorted(s.labels.items()))): i
                                   for i, s in enumerate(fam.samples)}
                continue
            index = where[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                i = index.get(key)
                if i is None:
                    index[key] = len(mine.samples)
                    mine.samples.append(s)
                    continue
                old = mine.samples[i]
                value = (min(old.value, s.value) if fam.name.endswith("_created")
                         else old.value + s.value)
                mine.samples[i] = old._replace(value=value)

    class _Merged:
        def collect(self) -> Iterator[Metric]:
            return iter(fams.values())

    return generate_latest(_Merged())  # type: ignore[arg-type]
