"""`python -m ops.etcdcerts DIR HOST... --client-dir C` (docker-compose's etcd-certs): C gets
the client's files alone, so gateways and init mount no CA or member key (review22h: with
ca.key a compromised gateway could sign itself a member certificate)."""

from __future__ import annotations

import stat
from pathlib import Path

from ops.etcdcerts import CLIENT_FILES, main


def test_the_client_dir_holds_only_the_client_files(tmp_path: Path) -> None:
    assert main([str(tmp_path / "all"), "etcd-az1", "--client-dir", str(tmp_path / "client")]) == 0
    client = tmp_path / "client"
    assert sorted(p.name for p in client.iterdir()) == sorted(CLIENT_FILES)
    assert "ca.key" not in CLIENT_FILES and "member.key" not in CLIENT_FILES
    assert stat.S_IMODE(client.stat().st_mode) == 0o700
    for name in CLIENT_FILES:
        assert (client / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
        assert stat.S_IMODE((client / name).stat().st_mode) == 0o600
