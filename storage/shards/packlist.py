"""The pack-number list of a lost-pack acknowledgement (`?packs=3,4`), one parser for the
node's route (`POST /v1/packs/lost/ack`) and the admin route that forwards to it, so both
take and refuse the same text: ASCII digits only (`str.isdigit` takes `²` and `١٢`), at most
20 digits a number and 1000 numbers (a bounded request line; `int()` of thousands of digits
raises)."""

from __future__ import annotations

import re

MAX_PACKS = 1000
_PACKS_RE = re.compile(r"[0-9]{1,20}(?:,[0-9]{1,20}){0,999}", re.ASCII)  # MAX_PACKS
PACKS_FORMAT = f"packs must be 1 to {MAX_PACKS} pack numbers (ASCII digits), comma-separated"


def parse_packs(raw: str) -> list[int] | None:
    """The pack numbers of `raw`, or None when it is not such a list (`PACKS_FORMAT`)."""
    if not _PACKS_RE.fullmatch(raw):
        return None
    return [int(x) for x in raw.split(",")]
