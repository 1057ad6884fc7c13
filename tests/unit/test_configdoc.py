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
            names = set(re.findall(r"TESSERA_[A-Z0-9_]*[A-Z0-9]", p.read_text()))
            if p.is_relative_to(ROOT / "storage" / "testing"):  # test hooks, not settings
                names = {n for n in names if not n.startswith("TESSERA_TEST_")}
            found |= names
    assert sorted(found - documented) == []


def test_documented_overrides_take_effect() -> None:
    """Each documented variable reaches the config key it names, in its unit."""
    from storage.config import env_settings

    assert env_settings("repair", {"TESSERA_REPAIR_DOWN_GRACE_S": "7"}).down_grace_s == 7
    assert env_settings("repair", {"TESSERA_REPAIR_BUSY_RATE_MBPS": "3"}).busy_rate_bytes_s \
        == 3 * 2**20
    assert env_settings("rebalance", {"TESSERA_REBALANCE_MIN_GAP_MB": "5"}).min_gap_bytes \
        == 5 * 2**20
