"""`tessera` arguments out of range are usage errors (exit 2, one line), never applied."""

from __future__ import annotations

import pytest

from ops.cli import main


@pytest.mark.parametrize("argv", [
    ["chaos", "--duration", "-5"],
    ["chaos", "--duration", "0"],
    ["chaos", "--duration", "nan"],
    ["chaos", "--repair-timeout", "-1"],
    ["up", "--port", "70000"],
    ["up", "--node-port", "0"],
    ["up", "--admin-port", "x"],
    ["up", "--etcd-peer-port", "-1"],
])
def test_out_of_range_is_a_usage_error(argv: list[str], tmp_path: object,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, *(["--data", str(tmp_path)] if argv[0] == "up" else [])])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"tessera {argv[0]}: error: argument {argv[1]}"), err
