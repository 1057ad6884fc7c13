"""The volume CLI's progress bar and the CLI's path errors, as an operator reads them
(newuser17): import showed `48/48` with no unit, and a bad export path a raw
`[Errno 2] No such file or directory: '...'`."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from ops import cli
from ops.pathcheck import explain
from ops.volumecli import MiB, _Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_in_mib_with_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Tty())
    prog = _Progress("import small", 47 * MiB + MiB // 2, MiB)  # a short last extent
    assert prog.line(15, 48, 2.0) == ("import small [##########" + " " * 20 +
                                      "] 16.0/47.5 MiB, 8.0 MiB/s")
    assert prog.line(47, 48, 5.0).endswith("] 47.5/47.5 MiB, 9.5 MiB/s")
    prog(47, 48)
    shown = sys.stderr.getvalue()
    assert "/47.5 MiB" in shown and "MiB/s" in shown and shown.endswith("\n")


def test_a_missing_directory_names_it_and_what_to_do(tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.raw"
    try:
        open(target, "wb")
    except OSError as exc:
        text = explain(exc)
    assert text == (f"{target}: directory {tmp_path / 'nonexistent'} does not exist; create "
                    f"it (mkdir -p {target.parent}) or give a path in an existing directory")


def test_other_path_errors_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(OSError) as under_file:
        open(tmp_path / "f" / "x", "wb")
    assert "is a file, not a directory" in explain(under_file.value)
    with pytest.raises(OSError) as a_dir:
        open(tmp_path, "wb")
    assert explain(a_dir.value) == f"{tmp_path} is a directory; give a file name"
    assert explain(ConnectionRefusedError(111, "Connection refused")) == \
        "[Errno 111] Connection refused"


def test_the_cli_prints_one_line_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    """Any command's OSError goes through `explain` (here `up --data` under a file)."""
    (tmp_path / "f").write_bytes(b"")

    def fail(_: object) -> int:
        (tmp_path / "f" / "data").mkdir(parents=True)
        return 0
    monkeypatch.setattr(cli, "_up", fail)
    assert cli.main(["up", "--data", str(tmp_path / "f" / "data")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Errno" not in err, err
    assert err.startswith(f"tessera up: {tmp_path / 'f' / 'data'}: a part of this path"), err
