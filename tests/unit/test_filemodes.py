"""`secure_tree` makes an existing data directory private, as gateways and `tessera up` do at
start: directories 0700, files 0600, symlinks untouched, skipped subtrees (shards, which their
nodes tighten as they count them) not walked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from storage.filemodes import secure_tree


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_secure_tree_tightens_an_old_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for d in ("meta", "logs", "secrets", "audit", "nodes/n1/shards/ab", "nodes/n1/tmp"):
        (data / d).mkdir(parents=True)
    files = ["meta/tessera.db", "meta/tessera.db-wal", "logs/gateway.log", "secrets/root.key",
             "audit/audit.log", "nodes/n1/tmp/x.tmp", "tessera.env"]
    for f in files:
        (data / f).write_text("x")
        os.chmod(data / f, 0o644)
    shard = data / "nodes/n1/shards/ab/abcd.1"
    shard.write_text("s")
    os.chmod(shard, 0o644)
    outside = tmp_path / "outside"
    outside.write_text("o")
    os.chmod(outside, 0o644)
    (data / "link").symlink_to(outside)
    for d in [data, *[p for p in data.rglob("*") if p.is_dir() and not p.is_symlink()]]:
        os.chmod(d, 0o755)

    changed = secure_tree(data, [data / "nodes/n1/shards"])
    assert changed > 0
    assert mode(data) == 0o700
    assert all(mode(data / f) == 0o600 for f in files)
    assert all(mode(p) == 0o700 for p in data.rglob("*")
               if p.is_dir() and not p.is_symlink() and "shards" not in p.parts)
    assert mode(shard) == 0o644 and mode(outside) == 0o644  # skipped; symlink not followed
    assert secure_tree(data, [data / "nodes/n1/shards"]) == 0  # idempotent
