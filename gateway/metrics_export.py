"""Export the storage library's timing histograms (`storage.telemetry`) to Prometheus."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import HistogramMetricFamily, Metric

from storage.telemetry import Timings


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
