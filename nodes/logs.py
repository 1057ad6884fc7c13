"""Structured logs of a node: one JSON object per line (to stderr, as `__main__` sets up)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from storage.logfile import StderrRotatingFileHandler, log_handler

LOGGER_NAME = "tessera.node"
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode  # built once, not per line
_LEVEL_NAMES = {lvl: logging.getLevelName(lvl).lower()
                for lvl in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                            logging.CRITICAL)}


class JsonLog:
    """Writes events as JSON lines through a `logging.Logger`; callers never pass secrets."""

    def __init__(self, node_id: str, logger: logging.Logger | None = None) -> None:
        self.node_id = node_id
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self._second = -1  # the whole second `_stamp` holds, formatted once per second
        self._stamp = ""

    def _ts(self, now: float) -> str:
        """`now` as 2026-01-02T03:04:05.678Z; the part to the second is formatted once per
        second (one line a request: strftime was a visible share of the node's CPU)."""
        second = int(now)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(now % 1 * 1000):03d}Z"

    def event(self, level: int, msg: str, **fields: Any) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        record = {
            "ts": self._ts(time.time()),
            "level": _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower(),
            "node_id": self.node_id,
            "msg": msg,
            **fields,
        }
        line = _ENCODE(record)
        hs = logger.handlers
        h = hs[0] if len(hs) == 1 else None
        if (type(h) is StderrRotatingFileHandler and h.formatter is not None
                and h.formatter._fmt == "%(message)s" and not h.filters and h.level <= level
                and not logger.filters and not logger.propagate):
            h.write_line(line)  # the line as logging would write it, without a LogRecord
            return
        # The record made directly: `Logger.log` would walk the stack for a caller file and
        # line that the one-message-per-line format never prints.
        logger.handle(logger.makeRecord(logger.name, level, "", 0, line, (), None))

    def info(self, msg: str, **fields: Any) -> None:
        self.event(logging.INFO, msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self.event(logging.WARNING, msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.event(logging.ERROR, msg, **fields)


def log_to_stderr(level: int = logging.INFO, log_file: Path | None = None) -> None:
    """Route the node's logger to stderr (or to `log_file`, rotated by size, which then is
    stderr too), one message per line, nothing added around it."""
    handler = log_handler(log_file, logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
