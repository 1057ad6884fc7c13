"""The admin audit read back for GET /admin/v1/audit: newest first, across the rotated files.

Each log (actions, refused requests) is read backwards in blocks from its current file into
`.1`, `.2`, ... (the rotation's order, `AuditLog.files`), the two merged by time, so a
listing goes on past a rotation (it read only the current files' last 4 MiB: after a
rotation the listing began again empty). Memory is a block per log. The bytes read per
listing are capped per log (`SCAN_MAX_BYTES` each), so a filter that matches nothing ends
there, and a flood of refused requests (which need no key) cannot spend the budget of the
real actions' log; a listing that a cap ended says so (`Listing.cut_short`). A rotation
during a read may show an entry twice or skip a file's worth: a listing, not a proof (the
files are).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

BLOCK = 64 * 1024
SCAN_MAX_BYTES = 64 * 1024 * 1024  # read per listing and per log at most, over its files


class Listing(NamedTuple):
    """A listing's entries, and the logs whose byte cap ended their read (older entries of
    them may match but were not read)."""

    entries: list[dict[str, Any]]
    cut_short: list[str]


def lines_newest_first(paths: Iterable[Path], budget: list[int]) -> Iterator[bytes]:
    """The complete lines of `paths` (newest file first), last line first, while
    `budget[0]` (bytes) lasts; `budget[0]` is left below 0 when it ran out with bytes
    still unread."""
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
                    budget[0] = -1  # cut short: bytes were left
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


def list_entries(logs: dict[str, list[Path]], match: Callable[[dict[str, Any]], bool],
                 limit: int, since: float = 0.0, scan_max: int = SCAN_MAX_BYTES) -> Listing:
    """Up to `limit` entries that `match`, newest first, none older than `since`, from
    every log's files (each list newest file first), each log read up to `scan_max` bytes."""
    budgets = {name: [scan_max] for name in logs}
    merged = heapq.merge(*(_entries(lines_newest_first(files, budgets[name]))
                           for name, files in logs.items()), key=lambda e: -_ts(e))
    out: list[dict[str, Any]] = []
    for e in merged:
        if _ts(e) < since:
            break
        if match(e):
            out.append(e)
            if len(out) >= limit:
                break
    return Listing(out, [name for name, b in budgets.items() if b[0] < 0])
