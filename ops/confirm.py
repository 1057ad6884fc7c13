"""The `[y/N]` question of a destructive command, asked on stderr.

stdout carries only the command's result (with `--json`, one JSON document), so the
question goes to stderr, as the explanation before it does (review19c L6: `input()`
wrote it to stdout, ahead of the JSON).
"""

from __future__ import annotations

import sys


def ask(question: str) -> bool:
    """Ask `question` on stderr and read one answer line from stdin; only y/yes is yes."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()  # "" at EOF: no
    return answer.strip().lower() in ("y", "yes")
