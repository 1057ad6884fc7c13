"""One JSON line per log record, with the request id and fields passed as `extra`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from storage.logfile import StderrRotatingFileHandler, log_handler

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode  # as json.dumps(...)
# The same encoder's C core, built once instead of per line (the per-request line's cost):
# no circular-reference markers, which a flat dict of a request's fields never needs.
_C_LINE = json.encoder.c_make_encoder and json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)


def _encode_line(out: dict[str, Any]) -> str:
    """`_ENCODE(out)`'s string for a flat dict (the request line's fields)."""
    return "".join(_C_LINE(out, 0)) if _C_LINE else _ENCODE(out)
_ROOT = logging.getLogger()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(time.time(), 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _ENCODE(out)


def _plain(logger: logging.Logger) -> bool:
    """Whether a record of `logger` reaches only the root's handlers, unfiltered."""
    c: logging.Logger | None = logger
    while c is not None and c is not _ROOT:
        if c.handlers or c.filters or c.disabled or not c.propagate:
            return False
        c = c.parent
    return not _ROOT.filters


def info_line(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """`logger.info(msg, extra=fields)`, writing the same line, for the per-request log line:
    when the root's one handler is the log file with this formatter and nothing filters,
    the line is encoded and written straight (no `LogRecord`, no handler walk: a third of
    the cost); otherwise through `logging` as usual."""
    if not logger.isEnabledFor(logging.INFO):
        return
    hs = _ROOT.handlers
    h = hs[0] if len(hs) == 1 else None
    if (type(h) is StderrRotatingFileHandler and type(h.formatter) is JsonFormatter
            and not h.filters and h.level <= logging.INFO and _plain(logger)):
        out = {"ts": round(time.time(), 3), "level": "info", "logger": logger.name, "msg": msg}
        out.update(fields)
        h.write_line(_encode_line(out))
    else:
        logger.info(msg, extra=fields)


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
