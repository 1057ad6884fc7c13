"""Export the storage library's timing histograms (`storage.telemetry`) to Prometheus."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from storage.lifecycle import LifecycleReport
from storage.telemetry import (
    ACCESS_LOG_COUNTS,
    ACCESS_LOG_OUTCOMES,
    AUDIT_COUNTS,
    AUDIT_FILES,
    LIFECYCLE,
    LIFECYCLE_PASS_STARTED,
    Timings,
)


class TimingsCollector:
    """Reads a `Timings` at scrape time into one histogram family labelled by `label`."""

    def __init__(self, name: str, doc: str, label: str, timings: Timings) -> None:
        self._name, self._doc, self._label, self._t = name, doc, label, timings

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._doc, labels=[self._label])]

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(self._name, self._doc, labels=[self._label])
        bounds = [*(repr(b) for b in self._t.buckets), "+Inf"]
        for value, (cum, total) in sorted(self._t.snapshot().items()):
            fam.add_metric([value], list(zip(bounds, cum, strict=True)), total)
        yield fam


class LifecycleCollector:
    """`tessera_lifecycle_passes_total` and `tessera_lifecycle_actions_total{action}`: what the
    lifecycle passes run by this gateway applied (0 on gateways not holding its lease);
    `tessera_lifecycle_last_pass_started_seconds`: when the last pass it finished began."""

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        counts = LIFECYCLE.snapshot()
        yield CounterMetricFamily("tessera_lifecycle_passes", "Lifecycle passes this gateway ran",
                                  value=counts.get("passes", 0.0))
        yield GaugeMetricFamily("tessera_lifecycle_last_pass_started_seconds",
                                "Wall-clock start (Unix s) of the last lifecycle pass this "
                                "gateway finished (0: none)", value=LIFECYCLE_PASS_STARTED.get())
        fam = CounterMetricFamily("tessera_lifecycle_actions",
                                  "Lifecycle actions this gateway applied, by kind",
                                  labels=["action"])
        for kind in ACTIONS:
            fam.add_metric([kind], counts.get(kind, 0.0))
        yield fam


class AccessLogCollector:
    """`tessera_access_log_records_total{outcome}` (staged, delivered, dropped_buffer_full,
    dropped_target, dropped_failures) and `tessera_access_log_objects_total`: server access
    log records this gateway staged, delivered or dropped, and the log objects it wrote
    (delivery runs on the gateway holding its lease)."""

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        counts = ACCESS_LOG_COUNTS.snapshot()
        fam = CounterMetricFamily("tessera_access_log_records",
                                  "Server access log records by outcome", labels=["outcome"])
        for outcome in ACCESS_LOG_OUTCOMES:
            fam.add_metric([outcome], counts.get(outcome, 0.0))
        yield fam
        yield CounterMetricFamily("tessera_access_log_objects",
                                  "Server access log objects delivered into target buckets",
                                  value=counts.get("objects", 0.0))


class AuditCollector:
    """`tessera_audit_entries_total{file}` and `tessera_audit_rotations_total{file}`: admin
    audit entries this gateway wrote and files it rotated, by file ("actions": audit.log,
    "refused": audit-refused.log). Refused rotations are a flood of refused admin requests;
    they never rotate the actions file."""

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        counts = AUDIT_COUNTS.snapshot()
        for what, doc in (("entries", "Admin audit entries written, by file"),
                          ("rotations", "Admin audit files rotated, by file")):
            fam = CounterMetricFamily(f"tessera_audit_{what}", doc, labels=["file"])
            for f in AUDIT_FILES:
                fam.add_metric([f], counts.get(f"{f}_{what}", 0.0))
            yield fam


ACTIONS = tuple(f for f in LifecycleReport.__dataclass_fields__ if f != "buckets")
