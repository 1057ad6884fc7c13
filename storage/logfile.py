"""A size-rotated log file that is also the process's stderr.

Gateways and nodes write JSON log lines; `tessera up` gives each child `--log-file
DATA/logs/NAME.log`. The file rotates by size (NAME.log.1, .2, ...) and, after each
rotation, the new file becomes file descriptor 2 again, so one-line startup errors, prints
and crash tracebacks land in the current file beside the log lines, never in a rotated one.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from collections.abc import Mapping
from logging.handlers import RotatingFileHandler
from pathlib import Path

from storage.config import env_settings

RESYNC_S = 1.0  # how often the file's real size is read back (stderr writes bypass the count)


class StderrRotatingFileHandler(RotatingFileHandler):
    """RotatingFileHandler whose current file is always the process's stderr too.

    Each record is formatted once and written with one `write` (the stdlib handler formats
    it twice and stats, seeks and tells the file per record): the file's size is counted
    here, and read back with `fstat` at most every `RESYNC_S` and before each rollover, since
    prints and tracebacks reach the file through fd 2 without passing this count.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._size = 0
        self._synced = 0.0
        self._regular = True
        self._adopt_stderr()

    def _adopt_stderr(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        sys.stderr.flush()
        os.dup2(self.stream.fileno(), 2)
        self._resync()

    def _resync(self) -> None:
        """Read the current file's size (and whether it is a regular file: bpo-45401)."""
        st = os.fstat(self.stream.fileno())
        self._regular = stat.S_ISREG(st.st_mode)
        self._size, self._synced = st.st_size, time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as logging's own handlers: report, never raise
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Write one line formatted elsewhere (no terminator) under the handler's lock, as
        `emit` writes a record's (a failure is reported as logging reports it, never raised)."""
        with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
            try:
                self._write(line + self.terminator)
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001
                self.handleError(logging.makeLogRecord({"msg": line}))

    def _write(self, line: str) -> None:
        if self.maxBytes > 0 and self._regular:
            if time.monotonic() - self._synced > RESYNC_S:
                self._resync()
            if self._size + len(line) >= self.maxBytes:
                self._resync()
                if self._size + len(line) >= self.maxBytes and self._size > 0:
                    self.doRollover()
        self.stream.write(line)
        self.stream.flush()
        self._size += len(line.encode()) if not line.isascii() else len(line)

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
