"""`tessera.env`: the credentials and endpoints `tessera up` writes beside a cluster's data.

One `NAME=value` line per variable, mode 0600 (it holds secrets), made so that a shell can
load it (`set -a; . DATA/tessera.env; set +a`). This module is its only reader and writer.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_FILE = "tessera.env"


def env_path(data_dir: Path) -> Path:
    return data_dir / ENV_FILE


def read_env(data_dir: Path) -> dict[str, str]:
    """The variables of `data_dir`'s tessera.env (OSError if it cannot be read)."""
    text = env_path(data_dir).read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def write_env(data_dir: Path, env: dict[str, str]) -> None:
    """Write `env` as `data_dir`'s tessera.env, readable by its owner only; replaced whole
    (a rename), so a reader never sees half of it."""
    path = env_path(data_dir)
    tmp = path.with_name(f"{ENV_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    os.replace(tmp, path)
