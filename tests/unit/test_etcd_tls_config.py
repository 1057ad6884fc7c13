"""[metadata] etcd_ca_file / etcd_cert_file / etcd_key_file: the client certificate etcd
members running --client-cert-auth require; all three or none, https endpoints only, paths
relative to data_dir. The shipped compose config uses them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.config import config_from_mapping, load_config
from storage.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FILES = {"etcd_ca_file": "tls/ca.pem", "etcd_cert_file": "tls/client.pem",
         "etcd_key_file": "/abs/client.key"}


def _raw(**meta: Any) -> dict[str, Any]:
    return {"profiles": {"standard": {"k": 1, "m": 1}},
            "nodes": [{"id": "n1", "zone": "z1", "address": "127.0.0.1:7001"},
                      {"id": "n2", "zone": "z2", "address": "127.0.0.1:7002"}],
            "metadata": {"backend": "etcd", "etcd_endpoints": ["https://127.0.1.10:2379"],
                         **meta}}


def test_files_resolve_against_data_dir(tmp_path: Path) -> None:
    tls = config_from_mapping(_raw(**FILES), tmp_path).etcd_tls
    assert tls is not None
    assert tls.ca_file == tmp_path.resolve() / "tls/ca.pem"
    assert tls.key_file == Path("/abs/client.key")


def test_no_files_no_client_certificate(tmp_path: Path) -> None:
    assert config_from_mapping(_raw(), tmp_path).etcd_tls is None


@pytest.mark.parametrize("drop", list(FILES))
def test_all_three_or_refused(tmp_path: Path, drop: str) -> None:
    with pytest.raises(ConfigError, match="go together"):
        config_from_mapping(_raw(**{k: v for k, v in FILES.items() if k != drop}), tmp_path)


def test_plain_http_endpoint_with_certificate_refused(tmp_path: Path) -> None:
    raw = _raw(**FILES)
    raw["metadata"]["etcd_endpoints"] = ["http://127.0.1.10:2379"]
    with pytest.raises(ConfigError, match="https"):
        config_from_mapping(raw, tmp_path)


def test_compose_config_shows_the_client_certificate() -> None:
    cfg = load_config(ROOT / "deploy" / "tessera.toml")
    assert cfg.etcd_tls is not None
    assert all(e.startswith("https://") for e in cfg.etcd_endpoints)
