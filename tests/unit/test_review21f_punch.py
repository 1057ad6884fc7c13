"""review21f: hole punching takes "the index does not name this PUT" for "a later durable
record of its id supersedes it". A group whose fdatasync and cut-back both failed leaves its
records in a retired pack, never indexed (never acknowledged) but complete: punched, they
are still the newest record of their id at the next restart, which then indexes zeros in
place of the acknowledged copy."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from nodes.packstore import PackStore

BODY = 64 * 1024 + 100


def _body(tag: str) -> bytes:
    return random.Random(tag).randbytes(BODY)


def test_a_failed_groups_records_are_never_punched_into_the_newest_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = f"{7:032x}.1"
    s = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s.open()
    try:
        asyncio.run(s.put(sid, [_body("v1")]))  # acknowledged
        real = os.fdatasync
        fails = [1]
        real_trunc = os.ftruncate

        def no_trunc(fd: int, n: int) -> None:
            raise OSError(5, "EIO")
        monkeypatch.setattr(os, "ftruncate", no_trunc)

        def flaky(fd: int) -> None:
            if fails[0]:
                fails[0] -= 1
                raise OSError(5, "EIO")
            real(fd)
        monkeypatch.setattr(os, "fdatasync", flaky)
        with pytest.raises(OSError):  # the replace fails; so does its cut-back
            asyncio.run(s.put(sid, [_body("v2")], replace=True))
        monkeypatch.setattr(os, "fdatasync", real)
        monkeypatch.setattr(os, "ftruncate", real_trunc)
        assert s.read(s.locate(sid)) == _body("v1")  # type: ignore[arg-type]
        asyncio.run(s.punch(min_dead=0))
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    again.open()
    try:
        got = again.read(again.locate(sid))  # type: ignore[arg-type]
        print("after restart: v1", got == _body("v1"), "v2", got == _body("v2"),
              "zeros from", next((i for i, b in enumerate(got) if b == 0 and
                                  got[i:i + 4096] == bytes(4096)), None))
        assert got in (_body("v1"), _body("v2"))  # either copy, never a punched body
    finally:
        again.close()
