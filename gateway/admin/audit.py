"""Append-only audit log of admin actions: one JSON line per action, fsynced.

Each entry says who (access key id), what (action and target), when and the result. Request
bodies are never written whole: only fields named in `SAFE_FIELDS`, so no secret reaches it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

SAFE_FIELDS = ("tenant", "name", "access_key", "wait_s", "version", "role", "volume", "snapshot",
               "size", "clone", "node", "zone", "address", "via", "key_id", "key", "state")


class AuditLog:
    """Appends entries to `<data_dir>/audit/audit.log` (O_APPEND, fsync per entry)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = asyncio.Lock()

    def _write(self, line: bytes) -> None:
        os.write(self._fd, line)
        os.fsync(self._fd)

    async def record(self, who: str, action: str, result: str,
                     details: dict[str, Any] | None = None, remote: str | None = None) -> None:
        entry: dict[str, Any] = {"ts": round(time.time(), 3), "who": who, "action": action,
                                 "result": result}
        if remote:
            entry["remote"] = remote
        for k, v in (details or {}).items():
            if k in SAFE_FIELDS and v is not None:
                entry[k] = v
        line = (json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n").encode()
        async with self._lock:
            await asyncio.to_thread(self._write, line)

    def close(self) -> None:
        os.close(self._fd)
