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
    got = list_entries(audit.files(), lambda e: True, 1000).entries
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
                                        5).entries] == evens
    ts = sorted(e["ts"] for e in got)
    newer = list_entries(audit.files(), lambda e: True, 1000, since=ts[len(ts) // 2]).entries
    assert [e for e in newer] == [e for e in got if e["ts"] >= ts[len(ts) // 2]]


def test_a_line_across_blocks_and_the_byte_budget(tmp_path: Path) -> None:
    """Lines longer than a block come back whole; the budget ends the read (no partial
    line is returned)."""
    log = tmp_path / "a.log"
    lines = [json.dumps({"ts": i, "i": i, "pad": "y" * (BLOCK // 3 * (i % 4))})
             for i in range(40)]
    log.write_text("".join(x + "\n" for x in lines))
    got = list_entries({"a": [log]}, lambda e: True, 1000)
    assert [e["i"] for e in got.entries] == list(range(39, -1, -1)) and got.cut_short == []
    few = list_entries({"a": [log]}, lambda e: True, 1000, scan_max=3 * BLOCK)
    assert 0 < len(few.entries) < 40 and few.cut_short == ["a"]
    assert [e["i"] for e in few.entries] == list(range(39, 39 - len(few.entries), -1))
    whole = list_entries({"a": [log]}, lambda e: True, 1000, scan_max=log.stat().st_size)
    assert len(whole.entries) == 40 and whole.cut_short == []  # read to the end: not cut


def test_a_refused_flood_does_not_spend_the_actions_budget(tmp_path: Path) -> None:
    """review19c L4: both logs drew on one byte budget, newest first, so a flood of refused
    requests (they need no key) newer than every admin action used it up and a filter for
    real actions found none, without saying the read was cut short. Each log has its own
    cap now, and a cut one is named."""
    actions, refused = tmp_path / "audit.log", tmp_path / "audit-refused.log"
    actions.write_text("".join(json.dumps({"ts": i, "action": "tenant.create" if i < 3 else
                                           "bucket.list", "result": "ok", "pad": "p" * 100})
                               + "\n" for i in range(2000)))  # several blocks
    refused.write_text("".join(json.dumps({"ts": 10_000 + i, "action": "x", "who": "anonymous",
                                           "result": "denied:AccessDenied", "pad": "p" * 200})
                               + "\n" for i in range(2000)))
    cap = 8 * BLOCK  # the flood (all newer than every action) is larger than the cap
    assert refused.stat().st_size > cap > actions.stat().st_size > 2 * BLOCK
    got = list_entries({"audit": [actions], "refused": [refused]},
                       lambda e: e["action"] == "tenant.create", 1000, scan_max=cap)
    assert [e["ts"] for e in got.entries] == [2, 1, 0], "the flood hid the admin actions"
    assert got.cut_short == ["refused"]
