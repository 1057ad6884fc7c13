"""Which shards a damaged range of a pack could have held (a restart's scan found it: a gap,
a bad record, a torn tail), so a shard file met beside a packed copy at start is judged by
damage that could have held a newer record of ITS id only (`nodes.packshadow`).

Why: a lost record matters to one id. Damage elsewhere in the packs (another shard's rotted
head) says nothing about whether this id's tombstone was lost. The range is tiled by its
records: a record whose head verifies names its shard; one whose head does not is known only
when its body is a whole shard whose header and every frame verify (their checksums are
seeded with the stripe and index, so rot cannot make one shard look like another). Anything
left unexplained (a tombstone's rotted head, unwritten or wiped bytes) could be any id: None.
"""

from __future__ import annotations

from nodes import packformat as pf
from storage.errors import IntegrityError
from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    frame_checksum,
)
from storage.shards.ids import shard_id

Ids = frozenset[str] | None  # the ids a range could hold; None: any


def held_ids(read_at: pf.ReadAt, start: int, end: int, torn: bool = False) -> Ids:
    """The ids of the records tiling [start, end) of a pack, or None when part of it is not
    explained (`torn`: the range is a pack's tail, its last record may be cut short)."""
    ids: set[str] = set()
    pos = start
    while pos < end:
        rec = pf.decode_head(read_at(pos, pf.HEAD_BYTES), pos)
        if rec is not None:
            if rec.end > end and not torn:
                return None  # a head overlapping a complete record: not ours to explain
            if rec.kind != pf.FOOTER:
                ids.add(rec.shard_id)
            pos = rec.end
            continue
        body = _whole_shard(read_at, pos + pf.HEAD_BYTES, end - pf.TRAILER_BYTES)
        if body is None:
            return None
        sid, length = body
        ids.add(sid)
        pos += pf.OVERHEAD + length
    return frozenset(ids)


def _whole_shard(read_at: pf.ReadAt, start: int, limit: int) -> tuple[str, int] | None:
    """(id, length) of the whole shard at `start` (header and every frame verify, the last
    frame short or the next one failing), ending by `limit`; None when there is none."""
    try:
        head = ShardHeader.unpack(read_at(start, HEADER_BYTES))
    except IntegrityError:
        return None
    pos, segment = start + HEADER_BYTES, 0
    while pos + FRAME_HEAD_BYTES <= limit:
        raw = read_at(pos, FRAME_HEAD_BYTES)
        n, crc = FRAME_HEAD.unpack(raw)
        if n > head.block_size or pos + FRAME_HEAD_BYTES + n > limit:
            break
        if frame_checksum(head, segment, read_at(pos + FRAME_HEAD_BYTES, n)) != crc:
            break
        pos += FRAME_HEAD_BYTES + n
        segment += 1
        if n < head.block_size:
            break
    if segment == 0:
        return None
    return shard_id(head.stripe_id, head.index), pos - start


def could_hold(ranges: list[tuple[int, int, Ids]], sid: str, after: int) -> bool:
    """Whether a range ending past `after` could have held a record of `sid`."""
    return any(b > after and (ids is None or sid in ids) for _a, b, ids in ranges)
