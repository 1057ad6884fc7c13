"""Shard identifiers: `<stripe id, 32 hex>.<shard index>`; never derived from user names.

Only ids matching the pattern are accepted anywhere, so no object key, bucket or volume
name can ever become part of a node's file path.
"""

from __future__ import annotations

import re
import secrets

# \Z, not $: "$" also matches before a trailing newline. No leading zeros: one name per shard.
SHARD_ID_RE = re.compile(r"^[0-9a-f]{32}\.(?:0|[1-9][0-9]{0,2})\Z")


def new_stripe_id() -> bytes:
    return secrets.token_bytes(16)


def shard_id(stripe_id: bytes, index: int) -> str:
    return f"{stripe_id.hex()}.{index}"


def parse_shard_id(sid: str) -> tuple[bytes, int]:
    """Split and validate; raises ValueError for anything not produced by `shard_id`."""
    if not SHARD_ID_RE.match(sid):
        raise ValueError("malformed shard id")
    stripe, index = sid.split(".")
    idx = int(index)
    if idx > 255:
        raise ValueError("shard index out of range")
    return bytes.fromhex(stripe), idx


def relative_path(sid: str) -> str:
    """Fan-out path of a (validated) shard id below a node's shard directory."""
    parse_shard_id(sid)
    return f"{sid[0:2]}/{sid[2:4]}/{sid}"
