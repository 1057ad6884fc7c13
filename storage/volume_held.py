"""The journal a snapshot holds: segments its writer had not folded when it froze, replayed
by every read of the snapshot and kept until no snapshot needs them.

A writer's snapshot (`JournaledVolume.snapshot`) freezes the extent map and records the
journal range [lo, hi] it needs (lo: its oldest unfolded segment, hi: the last sequence
spent) instead of folding the journal first. It costs one metadata transaction under the
append lock, not one whole-extent rewrite per extent the journal touches, so the writes it
holds up (the kernel holds the file's inode lock during the setxattr) wait that long only.
Its content is what an attach after a crash at the freeze reads: the extents, then the
segments in sequence order, each applied to the extents whose pointer folds in an older
sequence (the rule of `volume_journal.recover`).

The writer folds on in the background, at the next generation; `volume_journal.retire`
moves a folded segment that a snapshot needs to `(VJK, volume id, seq)` instead of
deleting it. `patches` replays the held segments for a snapshot read or a clone (through
the clone chain): `HELD_PARALLEL` segments are read at once, their pages go to a local spill
file (storage/volume_spill.py) and the handle keeps only their index, so its memory is
O(pages held), not O(bytes held). A clone's writer reads through them until it stores an
extent whole (a fold, a direct write, a trim), which drops that extent's patches.
`free` retires the kept segments no snapshot needs any more (a snapshot deleted).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING, TypeVar

from storage.keyspace import journal_prefix, kept_journal_prefix
from storage.keyspace import unpack as unpack_key
from storage.metadata import Item, MetadataStore
from storage.volume_gone import retire
from storage.volume_io import VolumeHandle
from storage.volume_journal import Entry, Segment, read_entries, scan_segments
from storage.volume_records import Volume, scan_prefix
from storage.volume_spill import PageSpill

if TYPE_CHECKING:
    from storage.volumes import VolumeService

HELD_PARALLEL = 8  # held segments read at once when a snapshot read or a clone opens

# extent -> {(offset in it, length): position in the handle's PageSpill} in the order they
# apply; a later write of the same range replaces the earlier one (applied once)
Patches = dict[int, dict[tuple[int, int], int]]
T = TypeVar("T")
R = TypeVar("R")


def _put(w: dict[tuple[int, int], int], key: tuple[int, int], at: int) -> None:
    w.pop(key, None)  # re-inserted: it applies after everything before it
    w[key] = at


async def in_order(items: Iterable[T], fn: Callable[[T], Awaitable[R]],
                   width: int) -> AsyncIterator[R]:
    """fn over items, up to `width` at once, results yielded in the items' order (so at most
    `width` results are held); the ones in flight are cancelled if the consumer stops."""
    it = iter(items)
    window: deque[asyncio.Task[R]] = deque()
    try:
        for x in it:
            window.append(asyncio.ensure_future(fn(x)))
            if len(window) >= width:
                break
        while window:
            r = await window.popleft()
            for x in it:
                window.append(asyncio.ensure_future(fn(x)))
                break
            yield r
    finally:
        for t in window:
            t.cancel()
        await asyncio.gather(*window, return_exceptions=True)


async def held_segments(meta: MetadataStore, vid: str, rng: tuple[int, int]) -> list[Segment]:
    """The segments [lo, hi] of volume `vid`, live or kept, in sequence order. Live ones are
    scanned first: a segment retired (moved to kept) between the scans is in the second."""
    lo, hi = rng
    found: dict[int, Segment] = {}
    for prefix in (journal_prefix(vid), kept_journal_prefix(vid)):
        async for s in scan_segments(meta, prefix):
            if lo <= s.seq <= hi:
                found.setdefault(s.seq, s)
    return [found[q] for q in sorted(found)]


async def patches(h: VolumeHandle, own: set[int]) -> Patches:
    """The journal writes the snapshots `h` reads through hold, per extent, in the order
    they apply: a nearer level's over a farther one's; their bytes go to `h.spill`.
    `own`: extents the handle's writer owns (stored whole, so nothing below shows through)."""
    out: Patches = {}
    resolved = set(own)
    es, n = h.vol.extent_size, h.vol.extents
    for vol, gen, pointers in h.levels:
        rng = vol.held_journal(gen) if gen in vol.snapshots else None
        if rng is not None:
            level: Patches = {}

            async def read(s: Segment, tenant: str = vol.tenant) -> tuple[Segment, list[Entry]]:
                return s, await read_entries(h.svc, tenant, s)
            segs = await held_segments(h.svc.meta, vol.id, rng)
            async with aclosing(in_order(segs, read, HELD_PARALLEL)) as stream:
                async for s, entries in stream:
                    if h.spill is None:
                        h.spill = PageSpill()
                    keep: list[bytes] = []  # one spill write per segment
                    at = h.spill.size
                    for off, data in entries:
                        pos = 0
                        while pos < len(data):
                            idx, eo = divmod(off + pos, es)
                            k = min(es - eo, len(data) - pos)
                            p = pointers.get(idx)
                            if idx < n and idx not in resolved and s.seq > (p.jseq if p else 0):
                                keep.append(data[pos:pos + k])
                                _put(level.setdefault(idx, {}), (eo, k), at)
                                at += k
                            pos += k
                    h.spill.put(b"".join(keep))
            for idx, nearer in out.items():  # what a nearer level holds applies after
                if idx in level:
                    for key, data in nearer.items():
                        _put(level[idx], key, data)
                    out[idx] = level.pop(idx)
            out.update(level)
        resolved |= pointers.keys()
    return out


async def free(svc: VolumeService, vol: Volume) -> None:
    """Retire the kept segments of `vol` that none of its snapshots replays any more."""
    dead: list[Item] = []
    async for it in scan_prefix(svc.meta, kept_journal_prefix(vol.id)):
        if not vol.holds_segment(int(unpack_key(it.key)[2])):
            dead.append(it)
    for i in range(0, len(dead), 256):
        await retire(svc.meta, dead[i:i + 256], svc.gc_grace_s)
