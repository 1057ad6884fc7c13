"""A shard file beside a packed copy of the same id, met at a node's start (`DiskShardStore`'s
count): which one the node keeps. A power cut can undo a file's unlink, or a crash fall
between a rewrite's two steps (`DiskShardStore.put_packed`, `supersede_packed_sync`); no
clock decides, only the copies' checks and the damage the start's pack scan reported."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from nodes.packstore import PackLoc, PackStore
from nodes.shardfile import ShardLocation, verify_file
from storage.errors import NotFound, ShardCorrupt

if TYPE_CHECKING:
    from nodes.disk import DiskShardStore


def file_shadowed(store: DiskShardStore, sid: str, path: str) -> bool:
    """Remove shard file `path` when a pack holds a whole copy of `sid` too (True): a
    power cut undid the file's unlink, or a crash fell between a rewrite's two steps
    (`put_packed`, `supersede_packed_sync`). Reads take the packed copy, so the file
    is never served or scrubbed, yet it was counted twice and would be served once the
    packed copy is quarantined. A packed copy that fails its checks keeps the file (it
    may be the only good copy; scrub quarantines the packed one). When the start's scan
    found damage after the packed record, the file may be the acknowledged rewrite whose
    tombstone that damage took: it wins, and the tombstone is written again
    (`_superseded`). At start only."""
    loc = None if store.packs is None else store.packs.locate(sid)
    if loc is None:
        return False
    if _superseded(store, sid, path, loc):
        return False
    try:
        if verify_file(store.locate(sid), sid).bad:
            return False
    except (ShardCorrupt, NotFound, OSError):
        return False
    try:
        os.unlink(path)
    except OSError:  # read-only or gone: counted as before (gone: not at all)
        return not os.path.exists(path)
    return True

def _superseded(store: DiskShardStore, sid: str, path: str, loc: PackLoc) -> bool:
    """Whether shard file `path` is a rewrite whose tombstone of the packed record `loc`
    was lost; then `supersede_packed_sync` is done again and the file kept. A tombstone
    is fdatasynced before its rewrite is acknowledged and a sealed pack keeps its
    tombstones, so an acknowledged one can only vanish through damage this start's scan
    reported after `loc` that could have held a record of `sid` (`_damaged_after`). No
    clock is trusted: a file revived by a power cut may carry any mtime (a clock stepped
    back, a copy without -t). Without
    such damage the packed copy wins (False). With it, a file that fails its checks is
    kept but tombstones nothing (True): neither copy is destroyed on a doubt."""
    assert store.packs is not None
    if not _damaged_after(store.packs, loc, sid):
        return False
    try:
        if verify_file(ShardLocation(path), sid).bad:
            return True
    except (ShardCorrupt, NotFound, OSError):
        return True
    try:
        store.supersede_packed_sync(sid, loc, -1)
    except OSError:  # counted twice until the next start tries again; reads take the
        pass  # packed copy meanwhile, as before
    return True

def _damaged_after(packs: PackStore, loc: PackLoc, sid: str) -> bool:
    """Whether the start's pack scan found damage (a gap, a bad record, a torn tail) that
    could have held a record of `sid` appended after `loc`: in a later pack, or in `loc`'s
    pack past its body's start. Damage whose records are all known to be other shards'
    (`nodes.packdamage`) says nothing about this one: the packed copy still wins."""
    for harm in packs.damage:
        if harm.seq > loc.seq and harm.could_hold(sid):
            return True
        if harm.seq == loc.seq and harm.could_hold(sid, loc.offset):
            return True
    return False
