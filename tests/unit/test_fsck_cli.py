"""mend18d: `tessera fsck` as an operator runs it. A wrong config (no secret, no database) is
one line naming the missing path, exit status 2, and creates no file (it used to create an
empty database and a new cluster secret, then say "no errors", exit 0). Nodes that do not
list their shards make the check incomplete: exit status 2, naming the nodes, never "no
errors"."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from storage.metadata.sqlite import SqliteStore

CONFIG = """data_dir = "data"

[profiles.standard]
k = 1
m = 1

[[nodes]]
id = "n1"
zone = "az1"
address = "127.0.0.1:1"

[[nodes]]
id = "n2"
zone = "az2"
address = "127.0.0.1:1"
"""


def _fsck(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", "fsck", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_wrong_config_is_one_line_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "tessera.toml").write_text(CONFIG)
    out = _fsck(tmp_path / "tessera.toml")
    secret = tmp_path / "data" / "secrets" / "cluster.key"
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr.splitlines() == [f"tessera fsck: cluster secret {secret}: No such file "
                                       "or directory"]
    assert _files(tmp_path) == ["tessera.toml"]
    secret.parent.mkdir(parents=True)
    secret.write_text("ab" * 32)
    out = _fsck(tmp_path / "tessera.toml")
    db = tmp_path / "data" / "meta" / "tessera.db"
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr.splitlines() == [f"tessera fsck: metadata database {db} not found"]
    assert _files(tmp_path) == ["data", "data/secrets", "data/secrets/cluster.key",
                                "tessera.toml"]


def test_unreachable_nodes_make_the_check_incomplete(tmp_path: Path) -> None:
    (tmp_path / "tessera.toml").write_text(CONFIG)
    secret = tmp_path / "data" / "secrets" / "cluster.key"
    secret.parent.mkdir(parents=True)
    secret.write_text("ab" * 32)

    async def make() -> None:
        await (await SqliteStore.open(tmp_path / "data" / "meta" / "tessera.db")).close()

    asyncio.run(make())
    before = _files(tmp_path)
    out = _fsck(tmp_path / "tessera.toml")
    assert out.returncode == 2, out
    lines = out.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines if ln.startswith("INCOMPLETE node")] == [
        "INCOMPLETE node n1 did not list its shards", "INCOMPLETE node n2 did not list its shards"]
    assert lines[-1] == "no errors found, check incomplete"
    # read only: no record, counter or secret file made; only SQLite's own -wal/-shm
    # sidecars, which a reader of a WAL database at rest needs (they are never data)
    assert sorted(set(_files(tmp_path)) - set(before)) == ["data/meta/tessera.db-shm",
                                                           "data/meta/tessera.db-wal"]
