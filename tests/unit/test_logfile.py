"""Process logs rotate by size, and stderr follows the current file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import logging, sys
from pathlib import Path
from storage.logfile import log_handler
log = logging.getLogger("t")
log.addHandler(log_handler(Path(sys.argv[1]), logging.Formatter("%(message)s")))
log.setLevel(logging.INFO)
for i in range(400):
    log.info("line %04d %s", i, "x" * 60)
print("LAST-WORDS on stderr", file=sys.stderr, flush=True)
"""


def test_logs_rotate_by_size_and_stderr_lands_in_the_current_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "n1.log"
    env = {**os.environ, "TESSERA_LOG_MAX_BYTES": "8192", "TESSERA_LOG_BACKUPS": "2"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(log)], env=env, capture_output=True,
                       text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # everything went to the file
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["n1.log", "n1.log.1", "n1.log.2"]  # two backups kept, older ones gone
    for p in log.parent.iterdir():
        assert p.stat().st_size <= 8192 + 200
    current = log.read_text()
    assert "line 0399" in current and "LAST-WORDS on stderr" in current
