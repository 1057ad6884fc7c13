"""GET /admin/v1/audit's reader (`gateway/admin/audit_read.py`): rotated files are listed
too, newest first, merged with the refused log by time, within its byte budget."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.admin.audit import AuditTrail
from gateway.admin.audit_read import BLOCK, list_entries


def _write(audit: AuditTrail, n: int, refused_every: int = 0) -> None:
    async def run() -> None:
        for i in range(n):
            result = "denied:AccessDenied" if refused_every and i % refused_every == 0 else "ok"
            await audit.record("AK", f"a.{i}.{'x' * 200}", result)
    asyncio.run(run())


def _i(e: dict) -> int:
    return int(e["action"].split(".")[1])


def test_rotated_files_are_listed_newest_first(tmp_path: Path) -> None:
    """The listing read only audit.log's tail: right after a rotation it was nearly empty
    and everything older than the last rotation was missing (final-s18)."""
    audit = AuditTrail(tmp_path, max_bytes=4096, backups=8, refused_max_bytes=4096,
                       refused_backups=2)
    _write(audit, 60, refused_every=7)
    audit.close()
    assert (tmp_path / "audit.log.3").exists()  # rotated several times
    got = list_entries(audit.files(), lambda e: True, 1000)
    assert [e["ts"] for e in got] == sorted((e["ts"] for e in got), reverse=True)
    ids = [_i(e) for e in got]
    for log in (0, 1):  # each log's entries in order, newest first
        mine = [i for i in ids if (i % 7 == 0) == bool(log)]
        assert mine == sorted(mine, reverse=True)
    # every action entry still on disk is listed (the current file alone holds a few)
    on_disk = {_i(json.loads(line)) for p in audit.actions.files() if p.exists()
               for line in p.read_text().splitlines()}
    assert {i for i in ids if i % 7} == on_disk and len(on_disk) > 20
    current = {_i(json.loads(line)) for line in audit.actions.path.read_text().splitlines()}
    assert len(current) < len(on_disk) / 2
    # limit and filters go across files; `since` stops at older entries
    evens = [i for i in ids if i % 7 and i % 2 == 0][:5]
    assert [_i(e) for e in list_entries(audit.files(), lambda e: _i(e) % 7 and _i(e) % 2 == 0,
                                        5)] == evens
    ts = sorted(e["ts"] for e in got)
    newer = list_entries(audit.files(), lambda e: True, 1000, since=ts[len(ts) // 2])
    assert [e for e in newer] == [e for e in got if e["ts"] >= ts[len(ts) // 2]]


def test_a_line_across_blocks_and_the_byte_budget(tmp_path: Path) -> None:
    """Lines longer than a block come back whole; the budget ends the read (no partial
    line is returned)."""
    log = tmp_path / "a.log"
    lines = [json.dumps({"ts": i, "i": i, "pad": "y" * (BLOCK // 3 * (i % 4))})
             for i in range(40)]
    log.write_text("".join(x + "\n" for x in lines))
    got = list_entries([[log]], lambda e: True, 1000)
    assert [e["i"] for e in got] == list(range(39, -1, -1))
    few = list_entries([[log]], lambda e: True, 1000, scan_max=3 * BLOCK)
    assert 0 < len(few) < 40 and [e["i"] for e in few] == list(range(39, 39 - len(few), -1))
