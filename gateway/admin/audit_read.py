"""The admin audit read back for GET /admin/v1/audit: newest first, across the rotated files.

Each log (actions, refused requests) is read backwards in blocks from its current file into
`.1`, `.2`, ... (the rotation's order, `AuditLog.files`), the two merged by time, so a
listing goes on past a rotation (it read only the current files' last 4 MiB: after a
rotation the listing began again empty). Memory is a block per log; the bytes read per
listing are capped (`SCAN_MAX_BYTES`), so a filter that matches nothing ends there. A
rotation during a read may show an entry twice or skip a file's worth: a listing, not a
proof (the files are).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

BLOCK = 64 * 1024
SCAN_MAX_BYTES = 64 * 1024 * 1024  # read per listing at most, over every file


def lines_newest_first(paths: Iterable[Path], budget: list[int]) -> Iterator[bytes]:
    """The complete lines of `paths` (newest file first), last line first, while
    `budget[0]` (bytes, shared with other readers) lasts."""
    for path in paths:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below; a missing backup is skipped
        except FileNotFoundError:
            continue
        with f:
            pos = f.seek(0, os.SEEK_END)
            rest = b""
            while pos > 0:
                if budget[0] <= 0:
                    return
                n = min(BLOCK, pos)
                pos -= n
                f.seek(pos)
                block = f.read(n) + rest
                budget[0] -= n
                lines = block.split(b"\n")
                rest = lines[0]  # may continue in the block before
                yield from (line for line in reversed(lines[1:]) if line)
            if rest:
                yield rest


def _entries(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            yield e


def _ts(e: dict[str, Any]) -> float:
    try:
        return float(e.get("ts", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def list_entries(logs: Iterable[list[Path]], match: Callable[[dict[str, Any]], bool],
                 limit: int, since: float = 0.0,
                 scan_max: int = SCAN_MAX_BYTES) -> list[dict[str, Any]]:
    """Up to `limit` entries that `match`, newest first, none older than `since`, from
    every log's files (each list newest file first)."""
    budget = [scan_max]
    merged = heapq.merge(*(_entries(lines_newest_first(files, budget)) for files in logs),
                         key=lambda e: -_ts(e))
    out: list[dict[str, Any]] = []
    for e in merged:
        if _ts(e) < since:
            break
        if match(e):
            out.append(e)
            if len(out) >= limit:
                break
    return out
