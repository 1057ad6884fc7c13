"""A fresh copy of a many-part version's data, indexed ahead of the swap that names it.

An archive transition or a restore writes a new copy of a version's parts and swaps it
into the version's records in one compare-and-swap (`ArchiveService._swap_in`). Up to
`retiring.INLINE_PARTS` parts are indexed in the swap's own transaction; a copy of more
parts has its stripe index entries (`X`) written first, `retiring.STEP_PARTS` a
transaction (`stage`), so the swap stays one small transaction whatever the part count
(etcd's `--max-txn-ops`). A copy whose swap did not happen is discarded at once (`unstage`)
rather than left to the day-long orphan sweep; the first staged entry binds the two, so a
swap that applied all the same keeps its parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from storage import retiring
from storage.errors import Conflict
from storage.keyspace import discarded_key, stripe_index_key
from storage.metadata import MetadataStore, Txn
from storage.metadata.fence import outside_step
from storage.object_edits import version_records
from storage.objects import ObjectService
from storage.records import PartLayout
from storage.version_retire import restored_stripes


class CopyStaging:
    """Staging and unstaging of a many-part copy's index entries, in steps."""

    def __init__(self, meta: MetadataStore, objects: ObjectService) -> None:
        self._meta = meta
        self._objects = objects

    async def stage(self, parts: list[PartLayout],
                    entry: Callable[[PartLayout], dict[str, Any]]) -> dict[bytes, int]:
        """Index `parts` ahead of their swap, `retiring.STEP_PARTS` a transaction (each
        comparing the stripes' discard tombstones absent); returns the compare that binds
        the swap to the first entry."""
        for at in range(0, len(parts), retiring.STEP_PARTS):
            step = parts[at:at + retiring.STEP_PARTS]
            while True:
                puts: dict[bytes, bytes] = {}
                compares: dict[bytes, int] = {}
                for p in step:
                    self._objects.index_part(puts, p, entry(p), compares)
                if await self._meta.txn(Txn(compares=compares, puts=puts)):
                    break
                await self._objects.recheck_nodes(compares)  # the map re-read after a removal
                for p in step:  # the epoch moved (a removal) or the map was not read: again
                    if await self._meta.get(discarded_key(p.stripe_id)) is not None:
                        raise Conflict("a rewritten stripe was discarded before it was indexed")
        first = stripe_index_key(parts[0].stripe_id)
        item = await self._meta.get(first)
        if item is None:
            raise Conflict("a staged index entry vanished")
        return {first: item.revision}

    async def unstage(self, bucket: str, key: str, version_id: str | None,
                      parts: list[PartLayout], state: str, staged: bool,
                      guard: dict[bytes, int]) -> None:
        """Discard a copy whose swap did not happen. Staged index entries are deleted
        first (`discard_parts` spares an indexed stripe), the first one in a transaction
        comparing the version's records unchanged: a swap that applied all the same (a
        timeout after sending) keeps its parts, and one still to apply fails on the
        first entry's compare. Staging cut short (no `guard`): no swap was tried.

        Outside any worker step's fence, as `discard_parts` is: a stale worker's copy is
        still cleaned up, and these compare-and-swaps need no lease."""
        await asyncio.create_task(self._unstage_now(bucket, key, version_id, parts, state,
                                                    staged, guard), context=outside_step())

    async def _unstage_now(self, bucket: str, key: str, version_id: str | None,
                           parts: list[PartLayout], state: str, staged: bool,
                           guard: dict[bytes, int]) -> None:
        ids = {p.stripe_id for p in parts}
        while guard:
            records = await version_records(self._meta, bucket, key, version_id)
            cur = records[0][1] if records else None
            named = [] if cur is None else [p.stripe_id for p in cur.parts] if \
                state == "live" else [s["stripe_id"] for s in restored_stripes(cur.restore)]
            if ids.intersection(named):
                return  # the swap applied: the copy is the version's
            first = next(iter(guard))
            compares = {**guard, **{it.key: it.revision for it, _ in records}}
            if await self._meta.txn(Txn(compares=compares, deletes=(first,))):
                break
            if (again := await self._meta.get(first)) is None:
                break
            guard = {first: again.revision}  # (changed: a swap comparing the old one fails)
        rest = [stripe_index_key(p.stripe_id) for p in parts] if staged else []
        for at in range(0, len(rest), retiring.STEP_PARTS * 2):
            await self._meta.txn(Txn(deletes=tuple(rest[at:at + retiring.STEP_PARTS * 2])))
        await self._objects.discard_parts(parts)
