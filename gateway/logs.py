"""One JSON line per log record, with the request id and fields passed as `extra`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from storage.logfile import log_handler

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(time.time(), 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def lean_records() -> None:
    """Skip what a record would gather that no line here prints (the caller's file and line:
    a walk up the stack per record; thread, process and multiprocessing names): the
    logging module's documented switches ("Optimization" in its HOWTO)."""
    logging._srcfile = None  # type: ignore[attr-defined]  # noqa: SLF001 - documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def setup(level: str = "INFO", log_file: Path | None = None) -> None:
    """JSON lines to stderr, or to `log_file` rotated by size (storage/logfile.py)."""
    lean_records()
    handler = log_handler(log_file, JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
