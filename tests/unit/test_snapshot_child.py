"""The snapshot child (gateway/block/snaphere.py) runs isolated (review22g F6).

It runs as root from whatever directory its caller is in: a `json.py` there must not be
what its `import json` runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gateway.block.mount import MountState, _state_path
from gateway.block.snaphere import prepare_snapshot


def test_a_module_in_the_callers_cwd_does_not_run_in_the_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    target = tmp_path / "m"
    # a mount record of the volume whose daemon is gone: the child starts, finds nothing
    st = MountState(volume="v", tenant="t", target=str(target), fuse_dir=str(tmp_path / "f"),
                    pid=2 ** 22 + 1)
    _state_path(data, target).write_text(json.dumps(dataclasses.asdict(st)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "json.py").write_text("raise SystemExit('PWNED from the cwd json.py')\n")
    monkeypatch.chdir(cwd)
    assert prepare_snapshot(data, "t", "v", "s1") == (False, [])
