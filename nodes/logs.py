"""Structured logs of a node: one JSON object per line (to stderr, as `__main__` sets up)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from storage.logfile import log_handler

LOGGER_NAME = "tessera.node"


class JsonLog:
    """Writes events as JSON lines through a `logging.Logger`; callers never pass secrets."""

    def __init__(self, node_id: str, logger: logging.Logger | None = None) -> None:
        self.node_id = node_id
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    def event(self, level: int, msg: str, **fields: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = time.time()
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": logging.getLevelName(level).lower(),
            "node_id": self.node_id,
            "msg": msg,
            **fields,
        }
        self.logger.log(level, json.dumps(record, default=str, separators=(",", ":")))

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
