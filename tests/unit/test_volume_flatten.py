"""A flatten keeps the clone's older snapshots readable.

A flatten copies into the clone's current generation what it reads from its origin, then
cuts the link. Snapshots of the clone taken before it froze earlier generations: they read
zeros where they shared extents with the origin, and deleting the origin's snapshot freed
the journal segments they read through. Now those snapshots keep the link (`base_at`), the
origin's snapshot stays held until the last of them goes.
"""

from __future__ import annotations

import pytest

from storage import volume_records
from storage.errors import Conflict, StorageError
from storage.records import pack, unpack
from storage.volume_records import Volume
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, with_service
from tests.unit.test_volume_snapshot_held import (
    PAGE,
    detach,
    kept,
    new_writer,
    read_snap,
    write_page,
)

VOLUME_FORMAT_VERSION = getattr(volume_records, "VOLUME_FORMAT_VERSION", 2)


def test_a_flatten_keeps_the_older_snapshots_of_the_clone() -> None:
    async def body(svc: VolumeService) -> None:
        w = await new_writer(svc)
        await w.write(0, b"A" * PAGE)  # held in the journal by the snapshot
        await w.write(SIZE - PAGE, b"Z" * PAGE)
        await w.flush()
        await w.snapshot("s")
        await detach(w)
        await svc.clone("t", "v", "s", "c")
        await write_page(svc, "c", b"B", PAGE, holder="c")  # the clone's own, over the origin's
        await svc.snapshot("t", "c", "cs")
        want = await read_snap(svc, "c", "cs")
        assert want[:2 * PAGE] == b"A" * PAGE + b"B" * PAGE and want[-PAGE:] == b"Z" * PAGE
        await svc.flatten("t", "c")
        assert await read_snap(svc, "c", "cs") == want
        await svc.clone("t", "c", "cs", "d")  # a clone of that snapshot reads it too
        d = await svc.open("t", "d", holder="d")
        assert await d.read(0, SIZE) == want
        await d.close()
        with pytest.raises(Conflict):  # c@cs still reads through v@s
            await svc.delete_snapshot("t", "v", "s")
        assert await read_snap(svc, "c", "cs") == want
        await svc.delete("t", "d")
        await svc.delete_snapshot("t", "c", "cs")  # the last reader of v@s
        assert (await svc.get("t", "v")).clones == []
        vid = (await svc.get("t", "v")).id
        assert await kept(svc, vid)
        await svc.delete_snapshot("t", "v", "s")
        assert await kept(svc, vid) == []
        h = await svc.open("t", "c", holder="c2")  # the flattened clone reads on its own
        assert await h.read(0, SIZE) == want
        await h.close()
    with_service(body)


def test_deleting_a_flattened_clone_with_old_snapshots_unlinks_it() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        await write_page(svc, "v", b"A")
        await svc.snapshot("t", "v", "s")
        await svc.clone("t", "v", "s", "c")
        await svc.snapshot("t", "c", "cs")
        await svc.flatten("t", "c")
        assert (await svc.get("t", "v")).clones == ["t/c"]
        await svc.delete("t", "c")
        assert (await svc.get("t", "v")).clones == []
        await svc.delete_snapshot("t", "v", "s")
    with_service(body)


def test_a_volume_record_of_a_newer_format_is_refused_not_misread() -> None:
    v = Volume(id="x", tenant="t", name="v", size=SIZE, extent_size=1 << 20, created=0.0,
               profile="standard")
    assert unpack(v.encode())["fv"] == VOLUME_FORMAT_VERSION >= 2  # older code reads 1
    assert Volume.decode(v.encode()) == v
    newer = unpack(v.encode())
    newer["fv"] = VOLUME_FORMAT_VERSION + 1
    with pytest.raises(StorageError, match="newer than this code"):
        Volume.decode(pack(newer))
