"""A node makes its data private: files 0600 and directories 0700, in an existing data
directory written with looser modes too (as releases before this rule left them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from storage.shards.auth import load_or_create_secret
from tests.contract.node_harness import free_port, make_shard, start_node, stop_node


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for p in root.rglob("*"):
        if not p.name.endswith(".stderr"):
            out[str(p.relative_to(root))] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_node_tightens_an_existing_loose_data_dir(tmp_path: Path) -> None:
    secret_file = tmp_path / "cluster.key"
    load_or_create_secret(secret_file)
    data = tmp_path / "data"
    sid, _, _, body = make_shard(frames=2)
    shard = data / "shards" / sid[:2] / sid[2:4] / sid
    old = os.umask(0o022)
    try:  # what an older release left behind
        shard.parent.mkdir(parents=True)
        shard.write_bytes(body)
        (data / "quarantine").mkdir()
        (data / "quarantine" / "x.json").write_text("{}")
        (data / "tmp").mkdir()
        for p in (data, data / "shards", shard.parent, shard.parent.parent):
            os.chmod(p, 0o755)
    finally:
        os.umask(old)
    assert modes(data)[str(shard.relative_to(data))] == 0o644
    port = free_port()
    proc, _, _ = start_node(tmp_path, [
        "--id", "n1", "--listen", f"127.0.0.1:{port}", "--zone", "az1", "--data", str(data),
        "--secret-file", str(secret_file)])
    try:
        got = modes(data)
    finally:
        stop_node(proc)
    loose = {p: oct(m) for p, m in got.items()
             if m != (0o700 if (data / p).is_dir() else 0o600)}
    assert loose == {}
