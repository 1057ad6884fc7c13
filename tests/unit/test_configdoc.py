"""docs/CONFIG.md is generated from the config dataclasses and must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from storage.configdoc import ENV_VARS, missing_docs, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_config_doc_is_current() -> None:
    committed = (ROOT / "docs" / "CONFIG.md").read_text()
    assert committed == render(), ("docs/CONFIG.md is stale: run "
                                   "`python -m storage.configdoc > docs/CONFIG.md`")


def test_every_config_key_is_explained() -> None:
    assert missing_docs() == [], ("explain these keys in storage/configdoc.py TOML_DOCS: "
                                  f"{missing_docs()}")


def test_every_environment_variable_in_the_code_is_documented() -> None:
    """Each TESSERA_* name the code reads appears in the document (prefixes built with
    f-strings, such as TESSERA_REPAIR_ + RATE_MBPS, are covered by their full names)."""
    documented = {e.name for e in ENV_VARS}
    found: set[str] = set()
    for d in ("storage", "gateway", "nodes"):
        for p in (ROOT / d).rglob("*.py"):
            found |= set(re.findall(r"TESSERA_[A-Z0-9_]*[A-Z0-9]", p.read_text()))
    prefixes = {"TESSERA_REPAIR", "TESSERA_REBALANCE"}  # env_rates(..., prefix)
    assert sorted(found - documented - prefixes) == []


def test_node_scrub_defaults_match_the_node() -> None:
    from nodes.scrubber import ScrubSettings

    d = {e.name: e.default() for e in ENV_VARS}
    s = ScrubSettings.from_env(env={})
    assert d["TESSERA_SCRUB_RATE_MBPS"] * 2**20 == s.rate_bytes_s
    assert d["TESSERA_SCRUB_PAUSE_S"] == s.pause_s


def test_documented_settings_take_effect() -> None:
    """The names are the ones the settings classes read."""
    from storage.workers.rebalance import RebalanceSettings
    from storage.workers.repair import RepairSettings

    assert RepairSettings.from_env({"TESSERA_REPAIR_DOWN_GRACE_S": "7"}).down_grace_s == 7
    assert RepairSettings.from_env({"TESSERA_REPAIR_BUSY_RATE_MBPS": "3"}).busy_rate_bytes_s \
        == 3 * 2**20
    assert RebalanceSettings.from_env({"TESSERA_REBALANCE_MIN_GAP_MB": "5"}).min_gap_bytes \
        == 5 * 2**20
