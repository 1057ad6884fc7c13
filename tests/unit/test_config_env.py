"""One source of configuration: every knob is a config key; `TESSERA_*` variables are only the
documented overrides that storage/config.py applies (issue 13)."""

from __future__ import annotations

import dataclasses
import io
import re
import tokenize
from pathlib import Path

import pytest

from storage import config as c
from storage.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MODULES = {"storage/config.py", "storage/config_env.py", "storage/configdoc.py"}
# Files that only *set* overrides for the clusters they start (test harness), never read one.
SETS_OVERRIDES = {"ops/chaos.py"}
NAME = re.compile(r"""^[rbfRBF]*["']{1,3}TESSERA_|^TESSERA_""")


def _env_names_in_code(path: Path) -> list[str]:
    """String literals of the file that are (or start with) a TESSERA_ name; docstrings,
    comments and prose such as help texts do not count."""
    hits = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type not in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1),
                            getattr(tokenize, "FSTRING_START", -1)):
            continue
        if NAME.match(tok.string):
            hits.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string}")
    return hits


def _is_test_hook(rel: str, hit: str) -> bool:
    """TESSERA_TEST_* names are test hooks, not configuration: read only in storage/testing/."""
    return rel.startswith("storage/testing/") and "TESSERA_TEST_" in hit


def test_no_environment_knob_is_read_outside_the_config_module() -> None:
    hits: list[str] = []
    for d in ("storage", "gateway", "nodes"):
        for p in sorted((ROOT / d).rglob("*.py")):
            rel = str(p.relative_to(ROOT))
            if rel not in CONFIG_MODULES | SETS_OVERRIDES:
                hits += [h for h in _env_names_in_code(p) if not _is_test_hook(rel, h)]
    assert hits == [], "read TESSERA_* through storage.config (ENV_OVERRIDES):\n" + \
        "\n".join(hits)


def test_every_override_names_a_real_key() -> None:
    for o in c.ENV_OVERRIDES:
        cls = {"gateway": c.GatewayConfig, "logging": c.LogSettings,
               **c.SETTINGS_SECTIONS}[o.section]
        assert o.key in {f.name for f in dataclasses.fields(cls)}, o


def _toml(tmp_path: Path, extra: str = "") -> Path:
    nodes = "\n".join(f'[[nodes]]\nid = "n{i}"\nzone = "z{i % 3}"\naddress = "127.0.0.1:{7000 + i}"'
                      for i in range(6))
    p = tmp_path / "tessera.toml"
    p.write_text(f"[profiles.standard]\nk = 2\nm = 2\n{extra}\n{nodes}\n")
    return p


def test_sections_come_from_the_file_and_the_environment_overrides_them(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[repair]\ndown_grace_s = 9\nparallel = 3\n[workers]\n"
                           "gc_grace_s = 5\n[scrub]\npause_s = 7\n")
    cfg = c.load_config(path, env={})
    assert (cfg.repair.down_grace_s, cfg.repair.parallel) == (9.0, 3)
    assert (cfg.workers.gc_grace_s, cfg.scrub.pause_s) == (5.0, 7.0)
    assert cfg.rebalance == c.RebalanceSettings()
    cfg = c.load_config(path, env={"TESSERA_REPAIR_DOWN_GRACE_S": "2",
                                   "TESSERA_REBALANCE_MIN_GAP_MB": "1",
                                   "TESSERA_DEEP_SCRUB_RATE_MBPS": "0",
                                   "TESSERA_LEASE_TTL_S": "3"})
    assert cfg.repair.down_grace_s == 2.0 and cfg.repair.parallel == 3
    assert cfg.rebalance.min_gap_bytes == 2**20
    assert cfg.gateway.deep_scrub_rate_mbps == 0 and cfg.workers.lease_ttl_s == 3.0


@pytest.mark.parametrize("extra,env", [
    ("[repair]\nparallel = 0\n", {}),
    ("[repair]\nsweep_batch = 1.5\n", {}),
    ("[rebalance]\nthreshold = -1\n", {}),
    ("[workers]\nunknown = 1\n", {}),
    ("[scrub]\npause_s = \"soon\"\n", {}),
    ("", {"TESSERA_REPAIR_SWEEP_S": "fast"}),
    ("", {"TESSERA_REPAIR_PARALLEL": "2.5"}),
])
def test_bad_values_are_refused_with_one_line(tmp_path: Path, extra: str,
                                              env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        c.load_config(_toml(tmp_path, extra), env=env)


def test_log_rotation_is_environment_only() -> None:
    assert c.env_settings("logging", {}) == c.LogSettings()
    assert c.env_settings("logging", {"TESSERA_LOG_BACKUPS": "5"}).backups == 5
    with pytest.raises(ConfigError):
        c.env_settings("logging", {"TESSERA_LOG_MAX_BYTES": "10"})


def test_upload_budget_comes_from_the_file_or_the_environment_and_is_checked(
        tmp_path: Path) -> None:
    assert c.load_config(_toml(tmp_path), env={}).gateway.upload_budget_bytes == 256 * c.MiB
    cfg = c.load_config(_toml(tmp_path), env={"TESSERA_UPLOAD_BUDGET_MB": "32"})
    assert cfg.gateway.upload_budget_bytes == 32 * c.MiB
    for bad in ("1000", "1.5e6", '"64MiB"'):
        with pytest.raises(ConfigError, match="upload_budget_bytes"):
            c.load_config(_toml(tmp_path, f"[gateway]\nupload_budget_bytes = {bad}\n"), env={})
