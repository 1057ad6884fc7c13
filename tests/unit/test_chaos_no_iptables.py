"""`tessera chaos` on a machine without iptables skips the zone partition with a message."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ops.chaos import ChaosCluster, Fault, Nemesis, Report
from ops.localcluster import default_config


def test_partition_without_iptables_is_skipped(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tessera.toml").write_text(default_config(tmp_path, 9000, 9100, 9001))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no iptables anywhere
    out = io.StringIO()
    report = Report()
    nem = Nemesis(ChaosCluster(tmp_path, {}), None, report, 1, out)  # type: ignore[arg-type]
    nem._partition_zone(Fault(at=0, kind="partition_zone", target="az1", hold=0, pick=0),
                        ["n1", "n2", "n3"])
    assert report.faults["partition_zone skipped (no iptables)"] == 1
    assert "iptables not found" in out.getvalue() and "apt install iptables" in out.getvalue()
