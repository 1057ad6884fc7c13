"""A local data directory whose etcd members were made before mutual TLS (members.json
without `tls`) is refused with what to do, not started as before: its members would
accept any client again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.localcluster import PRE_TLS, _local_etcd


def test_pre_tls_members_are_refused(tmp_path: Path) -> None:
    (tmp_path / "etcd").mkdir()
    (tmp_path / "etcd" / "members.json").write_text(json.dumps(
        [{"name": f"etcd-az{i}", "host": f"127.0.{i}.10", "client_port": 2379,
          "peer_port": 2380} for i in (1, 2, 3)]))
    with pytest.raises(RuntimeError) as err:
        _local_etcd(tmp_path, "etcd", 2379, 2380)
    assert str(err.value) == PRE_TLS and "\n" not in PRE_TLS


def test_new_members_speak_tls(tmp_path: Path) -> None:
    c = _local_etcd(tmp_path, "etcd", 2379, 2380)
    assert c is not None and all(e.startswith("https://") for e in c.endpoints)
    assert c.client_tls is not None
    again = _local_etcd(tmp_path, "etcd", 2379, 2380)  # members.json read back
    assert again is not None and again.endpoints == c.endpoints
