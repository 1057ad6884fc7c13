"""Header-signed admin changes are served once: a captured "create key" or "delete tenant"
must not replay within the signature's clock-skew window.

Every gateway worker (and every gateway of a set) shares the metadata store, so the claim is
a record there, put only if absent: the request's signature, under the time after which no
gateway accepts its X-Amz-Date any more. Gateways may be configured with different
`max_skew_s`, so that time is the date plus twice the ceiling every gateway's value is held
to (`config_sections.MAX_SKEW_S`: its skew, plus one more for the gateways' clocks
differing), never a claimer's own window another gateway's outlasts. Each claim also deletes
a few records past that time, so they do not pile up. A replay of a claim this process made
is refused from memory, with no store round trip (one sent to another gateway costs a
transaction; that gateway does not remember another's claim, which only its claimer may
give back). A change that failed on the server (5xx: nothing, or not all, was done)
gives its claim back (`release`), so the client's retry of the very same request is
served. GET and HEAD change nothing and may replay; console requests (a session cookie and
its CSRF token) are not signed and not claimed.
"""

from __future__ import annotations

import time
import weakref
from datetime import UTC, datetime

from aiohttp import web

from storage.config_sections import MAX_SKEW_S
from storage.errors import StorageError
from storage.keyspace import SYSTEM, pack, span
from storage.metadata import MetadataStore, Txn

PRUNE = 32  # expired claims deleted by each new one: more than one claim's worth
HOLD_S = 2 * MAX_SKEW_S  # a claim lasts this long past its request's X-Amz-Date
MEMO = 4096  # claims a process remembers (the oldest half forgotten past it: store again)
# store -> the claims this process made, oldest first (keys sort by expiry)
_SEEN: weakref.WeakKeyDictionary[MetadataStore, dict[bytes, None]] = (
    weakref.WeakKeyDictionary())
_BASE = pack(SYSTEM, "admin-once")
CLAIMED: web.RequestKey[bytes] = web.RequestKey("admin_once_claimed")  # this request's claim


def _until_key(until: int, *signature: str) -> bytes:
    """A claim's key, sorted by the second it expires (12 digits sort as numbers); without
    the signature, the end of the claims expired before `until`."""
    return pack(SYSTEM, "admin-once", f"{until:012d}", *signature)


def claim_key(signature: str, amz_date: str) -> bytes:
    """The claim of `signature`, of a request signed at `amz_date`."""
    signed = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    return _until_key(int(signed) + HOLD_S, signature)


async def claim(meta: MetadataStore, signature: str, amz_date: str,
                now: float | None = None) -> bool:
    """Record `signature` (of a request signed at `amz_date`) as served; False if it was
    already: a replay (of a claim this process made: no store round trip)."""
    key = claim_key(signature, amz_date)
    seen = _SEEN.setdefault(meta, {})
    if key in seen:
        return False
    start, _ = span(_BASE)
    now_s = int(time.time() if now is None else now)
    expired = await meta.range(start, _until_key(now_s), limit=PRUNE)
    fresh = await meta.txn(Txn(compares={key: 0}, puts={key: b""},
                               deletes=tuple(i.key for i in expired)))
    if not fresh:  # another process's claim: not remembered, as only that process
        return False  # hears of its release (a failed change), after which a retry is served
    seen[key] = None
    if len(seen) > MEMO:
        for old in list(seen)[:MEMO // 2]:
            del seen[old]
    return True


async def release(meta: MetadataStore, key: bytes) -> None:
    """Give back a claim whose change failed on the server; best effort (a claim left
    behind only refuses that one retry)."""
    _SEEN.get(meta, {}).pop(key, None)
    try:
        await meta.txn(Txn(deletes=(key,)))
    except StorageError:
        pass
