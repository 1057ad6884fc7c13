"""`quiesce` names a daemon flushed only once its journal fold (the checkpoint) succeeded.

A daemon that cannot take the checkpoint (ENOTSUP: one from before it existed) has not
folded its journal; naming it flushed would let a snapshot freeze extents without its
fsynced writes (review13b).
"""

import dataclasses
import errno
import json
import os
from pathlib import Path

import pytest

from gateway.block import mount


def _state(tmp_path: Path) -> Path:
    fuse_dir = tmp_path / "fuse"
    fuse_dir.mkdir()
    (fuse_dir / "volume").write_bytes(b"\0" * 4096)
    st = mount.MountState(volume="v", tenant="t", target=str(tmp_path / "mnt"),
                          fuse_dir=str(fuse_dir), pid=os.getpid())
    data = tmp_path / "data"
    mount._state_path(data, Path(st.target)).write_text(json.dumps(dataclasses.asdict(st)))
    return data


@pytest.mark.parametrize("code", [errno.ENOTSUP, errno.EOPNOTSUPP])
def test_no_checkpoint_is_not_flushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      code: int) -> None:
    data = _state(tmp_path)

    def refuse(*_a: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(mount.os, "setxattr", refuse)
    assert mount.quiesce(data, "t", "v") == []


def test_checkpoint_taken_is_flushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _state(tmp_path)
    taken: list[str] = []
    monkeypatch.setattr(mount.os, "setxattr", lambda _fd, name, _v: taken.append(name))
    assert mount.quiesce(data, "t", "v") == [os.getpid()]
    assert taken == [mount.CHECKPOINT_XATTR]


@pytest.mark.parametrize("flushed", [[], [4242]])
def test_cli_warns_when_a_snapshot_falls_back(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str],
                                              flushed: list[int]) -> None:
    """A writer here without the snapshot attribute (quiesce flushed it) gives a snapshot
    that may not be point-in-time: the CLI says so on one line; no writer here, no warning."""
    import argparse
    import asyncio
    from types import SimpleNamespace

    from gateway.block import snaphere
    from ops import volumecli

    monkeypatch.setattr(snaphere, "prepare_snapshot", lambda *_a: (False, flushed))

    class Svc:
        async def snapshot(self, *_a: object, flushed: list[int]) -> int:
            return 3

    a = argparse.Namespace(snap_cmd="create", name="v", snap="s1", json=False)
    c = SimpleNamespace(cfg=SimpleNamespace(data_dir=Path("/nonexistent")))
    asyncio.run(volumecli._snapshot(a, c, Svc(), "t"))
    out, err = capsys.readouterr()
    assert out == "snapshot v@s1 (generation 3)\n"
    assert err == (mount.old_daemon_warning("v") + "\n" if flushed else "")
