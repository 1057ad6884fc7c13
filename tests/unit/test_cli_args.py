"""`tessera` arguments out of range are usage errors (exit 2, one line), never applied."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.cli import main
from ops.localports import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """main() makes the process umask owner-only; other tests in this worker keep theirs."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.mark.parametrize("argv", [
    ["chaos", "--duration", "-5"],
    ["chaos", "--duration", "0"],
    ["chaos", "--duration", "nan"],
    ["chaos", "--repair-timeout", "-1"],
    ["up", "--port", "70000"],
    ["up", "--node-port", "0"],
    ["up", "--admin-port", "x"],
    ["up", "--etcd-peer-port", "-1"],
    ["kms", "delete", "orders", "--days", "3"],
    ["kms", "delete", "orders", "--days", "31"],
])
def test_out_of_range_is_a_usage_error(argv: list[str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, *(["--data", str(tmp_path)] if argv[0] == "up" else [])])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    flag = next(x for x in argv if x.startswith("--"))
    assert err[-1].startswith(f"tessera {argv[0]}"), err
    assert f"error: argument {flag}" in err[-1], err


def test_a_refused_first_start_leaves_no_config(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A typo or a taken port at first start must not poison the directory's later starts."""
    data = tmp_path / "d"
    ports = ["--port", str(free_port()), "--admin-port", str(free_port()),
             "--node-port", str(free_port())]
    assert main(["up", "--data", str(data), *ports, "--inline-max-bytes", "-1"]) == 1
    assert "inline_max_bytes" in capsys.readouterr().err
    assert not (data / "tessera.toml").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = ["--port", str(taken.getsockname()[1]), *ports[2:]]
        assert main(["up", "--data", str(data), *busy]) == 1
    assert "address already in use" in capsys.readouterr().err
    assert not data.exists()  # the directory the refused starts made is gone, lock and all


def test_data_that_is_a_file_is_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    assert main(["up", "--data", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0], err


def test_chaos_refuses_a_directory_it_did_not_make(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's cluster (any non-empty directory without chaos's mark) never takes
    faults: refused in one line before anything starts, nothing written there."""
    (tmp_path / "tessera.toml").write_text("[cluster]\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["chaos", "--duration", "1", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chaos did not make" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_chaos_may_use_new_empty_or_its_own_directories(tmp_path: Path) -> None:
    from ops.chaos_run import CHAOS_MARK, chaos_may_use

    assert chaos_may_use(tmp_path / "new")  # made, and marked as chaos's own
    assert (tmp_path / "new" / CHAOS_MARK).is_file()
    (tmp_path / "new" / "tessera.toml").write_text("")  # a run's cluster inside: still its own
    assert chaos_may_use(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    assert chaos_may_use(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    assert not chaos_may_use(tmp_path / "file")


def test_gateway_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`tessera gateway --help` says what --log-level takes and prints no "(default: None)"
    (newuser16: the defaults formatter appended it twice to --workers)."""
    from gateway.__main__ import main as gateway_main

    with pytest.raises(SystemExit) as exc:
        gateway_main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "(default: None)" not in out, out
    assert "least severe level logged" in out, out


def test_node_help_names_the_membership_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`tessera node --help` printed only the options of running a node: `tessera --help`
    promises `node list|add|drain|activate|remove`, and nothing under `node` said so
    (newuser17)."""
    from nodes.__main__ import settings_from_args
    from ops.nodecli import ACTIONS

    with pytest.raises(SystemExit) as exc:
        settings_from_args(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "tessera node " + "|".join(ACTIONS) in out, out


@pytest.mark.parametrize(("argv", "first"), [(["config"], "get"), (["tenant"], "create"),
                                             (["volume"], "create"), ([], "up"),
                                             (["node"], "list")])
def test_a_command_without_its_action_prints_its_help_and_what_to_do(
        argv: list[str], first: str) -> None:
    """`tessera config` printed argparse's usage line and "error: the following arguments
    are required: action" (newuser19): now the command's help and which actions to add,
    exit 2 (a usage error), nothing on stdout."""
    r = subprocess.run([sys.executable, "-m", "ops.cli", *argv], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=ROOT)
    prog = " ".join(["tessera", *argv])
    assert r.returncode == 2 and r.stdout == "", r
    assert "the following arguments are required" not in r.stderr and "Traceback" not in \
        r.stderr, r.stderr
    assert r.stderr.startswith(f"usage: {prog} ") and "show this help message" in r.stderr
    last = r.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"{prog}: no ") and f"add one of {first}, " in last \
        and f"`{prog} {first} --help`" in last, last


def test_node_shard_limit_is_not_named_like_the_packs_limit() -> None:
    """`tessera node --max-shard-bytes` (the largest shard a node accepts, 8 GiB) read like
    `[packs] max_shard_bytes` (the 1 MiB packing threshold): two knobs, one name
    (newuser19). The flag was in no released README, so it is renamed without an alias."""
    r = subprocess.run([sys.executable, "-m", "ops.cli", "node", "--help"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "--shard-size-limit BYTES" in r.stdout and "--max-shard-bytes" not in r.stdout
    assert "not [packs] max_shard_bytes" in " ".join(r.stdout.split())


def test_gateway_unknown_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A level logging does not know was a ValueError traceback from logging at start."""
    from gateway.__main__ import main as gateway_main

    with pytest.raises(SystemExit) as exc:
        gateway_main(["--config", "x.toml", "--log-level", "loud"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: argument --log-level" in err[-1], err


@pytest.mark.parametrize("argv", [["config", "get"], ["status"], ["node", "list"]])
def test_every_admin_command_takes_config_and_says_so(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without the admin environment the one-line error offers `--config`, which every admin
    command accepts (`tessera config` did not: an argparse usage error; newuser19)."""
    for name in ("TESSERA_ADMIN_URL", "TESSERA_ADMIN_ACCESS_KEY", "TESSERA_ADMIN_SECRET_KEY",
                 "TESSERA_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "or pass --config DATA/tessera.toml" in err, err
    assert main([*argv, "--config", str(tmp_path / "nope.toml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.toml" in err and "not found" in err, err
