"""The members `tessera up` starts snapshot every SNAPSHOT_COUNT Raft entries, not etcd 3.4's
100,000: with 4 KiB inline bodies (~27 KiB a batched commit) the default lets each member hold
gigabytes of entries in memory, three members on one host."""

from __future__ import annotations

from pathlib import Path

from ops.etcdcluster import SNAPSHOT_COUNT, EtcdCluster, default_members


def test_members_snapshot_every_snapshot_count_entries(tmp_path: Path) -> None:
    c = EtcdCluster(tmp_path / "data", default_members(2379, 2380), tmp_path / "logs")
    for m in c.members:
        args = c._args(m)  # noqa: SLF001
        assert args[args.index("--snapshot-count") + 1] == str(SNAPSHOT_COUNT)
