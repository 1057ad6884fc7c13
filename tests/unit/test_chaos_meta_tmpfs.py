"""The chaos harness's fill_meta fault moves the metadata onto a tmpfs and back (review16e
finding 7): moving it back never leaves the only copy in RAM, and its filler never outlives
the fault."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import chaos

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts: root only; CI "
                                "runs as root")


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[Path]:
    """A metadata directory with a few files; any mount left on it is removed at the end."""
    d = tmp_path / "meta"
    (d / "sub").mkdir(parents=True)
    (d / "tessera.db").write_bytes(os.urandom(100_000))
    (d / "sub" / "x").write_bytes(b"x")
    yield d
    while os.path.ismount(d):
        subprocess.run(["umount", "-l", str(d)], check=True)


def _contents(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def test_the_metadata_goes_onto_a_tmpfs_and_back_with_its_changes(meta: Path) -> None:
    keep = meta.with_name("meta.keep")
    chaos._onto_tmpfs(meta, keep, 1 << 20)
    assert os.path.ismount(meta)
    (meta / "tessera.db").write_bytes(b"changed while on the tmpfs")
    want = _contents(meta)
    chaos._off_tmpfs(meta, keep)
    assert not os.path.ismount(meta)
    assert _contents(meta) == want
    assert not keep.exists() and not meta.with_name("meta.new").exists()


def test_a_failed_copy_back_leaves_the_disk_copy_and_the_tmpfs(
        meta: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = meta.with_name("meta.keep")
    before = _contents(meta)
    chaos._onto_tmpfs(meta, keep, 1 << 20)
    (meta / "tessera.db").write_bytes(b"changed while on the tmpfs")
    now = _contents(meta)

    def broken(src: Path, dst: Path, **kw: object) -> None:
        Path(dst).mkdir()
        raise OSError(28, "No space left on device")  # the disk filled during the copy

    monkeypatch.setattr(shutil, "copytree", broken)
    with pytest.raises(OSError):
        chaos._off_tmpfs(meta, keep)
    assert _contents(keep) == before  # the disk's copy is still there
    assert os.path.ismount(meta) and _contents(meta) == now  # and the current one


def test_the_filler_goes_whatever_happens_while_the_disk_is_full(tmp_path: Path) -> None:
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True)
    try:
        with pytest.raises(RuntimeError), chaos.filled(d) as filler:
            assert filler.stat().st_size > 0
            raise RuntimeError("the fault failed while the disk was full")
        assert list(d.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)
