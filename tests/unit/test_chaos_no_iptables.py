"""`tessera chaos` on a machine without iptables skips the zone partition with a message."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ops.chaos import Fault, Nemesis, Report
from ops.chaos_cluster import ChaosCluster
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


def test_a_lying_shard_fault_skips_a_file_it_cannot_rewrite(tmp_path: Path) -> None:
    """The picked shard file may be one still being written (no whole header) or gone by
    GC: the fault then plants its lie in the next file, so a run's count of lies does not
    depend on timing (test_lying_shards_and_zone_then_kills counts exactly two)."""
    from storage.pipeline import shard_headers
    from storage.shards.format import pack_frame

    (tmp_path / "tessera.toml").write_text(default_config(tmp_path, 9000, 9100, 9001))
    shards = tmp_path / "nodes" / "n1" / "shards" / "ab" / "cd"
    shards.mkdir(parents=True)
    (shards / "a-partial").write_bytes(b"\x01\x02")  # a shard being written: no header yet
    header = shard_headers(4, 2, 1024, b"s" * 16)[0]
    good = header.pack() + pack_frame(header, 0, b"\x07" * header.block_size)
    (shards / "b-whole").write_bytes(good)
    report = Report()
    nem = Nemesis(ChaosCluster(tmp_path, {}), None, report, 1, io.StringIO())  # type: ignore[arg-type]
    nem.inject(Fault(at=0, kind="lying_shard", target="", hold=0, pick=0))
    assert [p.name for p, _ in report.lies] == ["b-whole"]
    assert (shards / "b-whole").read_bytes() != good
