"""Shard identifiers: `<stripe id, 32 hex>.<shard index>`; never derived from user names.

Only ids matching the pattern are accepted anywhere, so no object key, bucket or volume
name can ever become part of a node's file path.
"""

from __future__ import annotations

import re
import secrets
import time

# \Z, not $: "$" also matches before a trailing newline. No leading zeros: one name per shard.
SHARD_ID_RE = re.compile(r"^[0-9a-f]{32}\.(?:0|[1-9][0-9]{0,2})\Z")


LEAF_WINDOW_S = 1  # the fan-out leaf new stripes' shards go to moves on this often


def new_stripe_id() -> bytes:
    """16 bytes: the first two name the current time window (`LEAF_WINDOW_S`, wrapping
    after 65,536 windows, ~18 h), the other fourteen random.

    A shard's file sits in the leaf directory `<id[0:2]>/<id[2:4]>` on its node
    (`relative_path`), so the shards written in one window, by every gateway, share one
    leaf per node: a node makes and fsyncs into its parent one new leaf per window instead
    of one for nearly every shard while its 65,536 leaves are still being made (a young
    node: ~0.94 mkdir per shard PUT with random ids). Over a full turn the windows spread
    shards evenly over the leaves, as random ids did. Placement hashes the whole id
    (`storage.placement`), so it is unaffected; 112 random bits keep ids unique.
    """
    window = int(time.time()) // LEAF_WINDOW_S & 0xFFFF
    return window.to_bytes(2, "big") + secrets.token_bytes(14)


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
