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


def test_members_check_client_and_peer_certificates(tmp_path: Path) -> None:
    """Both ports speak mutual TLS: https URLs and each member trusting only the cluster CA."""
    c = EtcdCluster(tmp_path / "data", default_members(2379, 2380), tmp_path / "logs")
    for m in c.members:
        args = c._args(m)  # noqa: SLF001
        assert m.client_url.startswith("https://") and m.peer_url.startswith("https://")
        for flag in ("--client-cert-auth", "--peer-client-cert-auth"):
            assert flag in args
        for flag in ("--trusted-ca-file", "--peer-trusted-ca-file"):
            assert args[args.index(flag) + 1] == str(c.tls_dir / "ca.pem")
