"""`tessera up` on an existing data directory: the note for first-start options names
tessera.toml keys that exist (newuser15: it said "edit tessera.toml", which held no
day_seconds key to edit)."""

from __future__ import annotations

from pathlib import Path

from ops.localcluster import default_config, first_start_note
from storage.config import load_config


def test_no_first_start_option_no_note(tmp_path: Path) -> None:
    assert first_start_note(tmp_path / "tessera.toml", None, None) is None


def test_the_note_names_keys_that_take_effect(tmp_path: Path) -> None:
    config = tmp_path / "tessera.toml"
    note = first_start_note(config, 60.0, 0)
    assert note is not None and str(config) in note
    assert "[archive] day_seconds" in note and "[archive] lifecycle_interval_s" in note
    assert "[cluster] inline_max_bytes" in note
    # The keys the note names, added as it says, are the ones the cluster reads.
    text = default_config(tmp_path, 9000, 9100, 9001)
    text = text.replace("[cluster]\n", "[cluster]\ninline_max_bytes = 0\n", 1)
    text = text.replace("inline_max_bytes = 4096\n", "")
    config.write_text(text + "\n[archive]\nday_seconds = 60.0\nlifecycle_interval_s = 6.0\n")
    cfg = load_config(config)
    assert (cfg.archive.day_seconds, cfg.archive.lifecycle_interval_s) == (60.0, 6.0)
    assert cfg.inline_max_bytes == 0
