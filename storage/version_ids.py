"""Version ids and the sort key that lists a key's versions newest first."""

from __future__ import annotations

import secrets


def new_version_id() -> str:
    return secrets.token_urlsafe(24)


def version_sort(ts_ns: int, version_id: str) -> str:
    """Sort key putting the newest version first."""
    return f"{(1 << 64) - ts_ns:020d}.{version_id}"
