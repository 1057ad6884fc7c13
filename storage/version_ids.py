"""Version ids and the sort key that lists a key's versions newest first."""

from __future__ import annotations

import secrets


def new_version_id() -> str:
    """32 URL-safe characters, never starting with '-': a command line reads such a value as
    an option (`aws s3api get-object --version-id -gtQ...` fails: one id in 64 did)."""
    while True:
        vid = secrets.token_urlsafe(24)
        if not vid.startswith("-"):
            return vid


def version_sort(ts_ns: int, version_id: str) -> str:
    """Sort key putting the newest version first."""
    return f"{(1 << 64) - ts_ns:020d}.{version_id}"
