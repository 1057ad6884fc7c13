"""tessera.env follows tessera.toml at every start: its endpoints and region are the config's,
its credentials are kept (review20c: a region changed in the config left clients signing for
the old one, and the gateway refuses a foreign region with AuthorizationHeaderMalformed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ops.envfile import read_env, write_env
from ops.localcluster import bootstrap, default_config
from storage.config import ENV_ADMIN_URL


def _first_start(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    config = data / "tessera.toml"
    config.write_text(default_config(data, 19001, 19101, 19002, (), None, None))
    write_env(data, {"AWS_ENDPOINT_URL": "http://127.0.0.1:19001",
                     "AWS_ACCESS_KEY_ID": "AKIDKEPT", "AWS_SECRET_ACCESS_KEY": "kept",
                     "AWS_DEFAULT_REGION": "us-east-1",
                     ENV_ADMIN_URL: "http://127.0.0.1:19002"})
    return config


def test_a_region_changed_in_the_config_reaches_tessera_env(tmp_path: Path) -> None:
    config = _first_start(tmp_path)
    text = config.read_text()
    assert 'region = "us-east-1"' in text
    config.write_text(text.replace('region = "us-east-1"', 'region = "eu-central-1"'))
    env = asyncio.run(bootstrap(config))
    on_disk = read_env(config.parent)
    assert env == on_disk
    assert on_disk["AWS_DEFAULT_REGION"] == "eu-central-1"
    assert on_disk["AWS_ACCESS_KEY_ID"] == "AKIDKEPT"
    assert on_disk["AWS_SECRET_ACCESS_KEY"] == "kept"


def test_ports_changed_in_the_config_reach_tessera_env(tmp_path: Path) -> None:
    config = _first_start(tmp_path)
    text = config.read_text()
    config.write_text(text.replace(":19001", ":19501").replace(":19002", ":19502"))
    env = asyncio.run(bootstrap(config))
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:19501"
    assert env[ENV_ADMIN_URL] == "http://127.0.0.1:19502"
    assert read_env(config.parent) == env


def test_an_unchanged_config_leaves_tessera_env_as_it_was(tmp_path: Path) -> None:
    config = _first_start(tmp_path)
    env_file = config.parent / "tessera.env"
    before = env_file.read_text()
    mtime = env_file.stat().st_mtime_ns
    asyncio.run(bootstrap(config))
    assert env_file.read_text() == before and env_file.stat().st_mtime_ns == mtime
