"""A size-rotated log file that is also the process's stderr.

Gateways and nodes write JSON log lines; `tessera up` gives each child `--log-file
DATA/logs/NAME.log`. The file rotates by size (NAME.log.1, .2, ...) and, after each
rotation, the new file becomes file descriptor 2 again, so one-line startup errors, prints
and crash tracebacks land in the current file beside the log lines, never in a rotated one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from logging.handlers import RotatingFileHandler
from pathlib import Path

from storage.config import env_settings


class StderrRotatingFileHandler(RotatingFileHandler):
    """RotatingFileHandler whose current file is always the process's stderr too."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._adopt_stderr()

    def _adopt_stderr(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        sys.stderr.flush()
        os.dup2(self.stream.fileno(), 2)

    def doRollover(self) -> None:  # noqa: N802 - the logging module's name
        super().doRollover()
        self._adopt_stderr()


def rotation_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(max bytes per file, rotated files kept): LogSettings with its environment overrides."""
    s = env_settings("logging", env)
    return s.max_bytes, s.backups


def log_handler(path: Path | None, formatter: logging.Formatter) -> logging.Handler:
    """The handler a process logs through: the rotated file when given, else plain stderr."""
    if path is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        size, backups = rotation_from_env()
        handler = StderrRotatingFileHandler(path, size, backups)
    handler.setFormatter(formatter)
    return handler
