"""A new user's first run: the README's install command in a fresh venv, then the operator CLI.

The venv gets exactly `pip install -e .` (no test extras: no botocore, no mfusepy), its own
`tessera up` starts the cluster, and its own `tessera` answers status, tenant and key
commands. The venv is made without pip of its own and this interpreter's pip installs into
it (`pip --python`): bootstrapping a second pip (ensurepip, ~4 CPU-s) proves nothing the
CI's own fresh venv (`.ci/run`: `python3 -m venv`, then the README's pip) does not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding what the README's `pip install -e .` installs, nothing more."""
    d = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d)], check=True,
                   timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(d / "bin" / "python"),
                        "install", "-q", "-e", "."], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "bin"


@pytest.fixture(scope="module")
def first(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("first") / "data",
                     tessera=[str(venv / "tessera")]).start()
    yield c
    c.stop()


def tessera(venv: Path, c: LocalCluster | None, *args: str, timeout: float = 60,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(c.env if c is not None else {})
    env.update(extra_env or {})
    env["PATH"] = f"{venv}:{env.get('PATH', '')}"
    return subprocess.run(["tessera", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=venv, stdin=subprocess.DEVNULL)


def test_install_alone_gives_a_working_operator_cli(venv: Path, first: LocalCluster) -> None:
    nobotocore = subprocess.run([str(venv / "python"), "-c", "import botocore"],
                                capture_output=True)
    assert nobotocore.returncode != 0  # the README's install has no AWS SDK
    assert tessera(venv, None, "--version").stdout.startswith("tessera 0.1")
    st = tessera(venv, first, "status")
    assert st.returncode == 0, st.stderr
    assert "DURABILITY" in st.stdout and "metadata" in st.stdout
    t = tessera(venv, first, "tenant", "create", "acme")
    assert t.returncode == 0, t.stderr
    k = tessera(venv, first, "key", "create", "--tenant", "acme", "--json")
    assert k.returncode == 0, k.stderr
    assert json.loads(k.stdout)["tenant"] == "acme"
    ls = tessera(venv, first, "tenant", "list")
    assert "acme" in ls.stdout


def test_up_help_names_all_nodes_and_defaults(venv: Path) -> None:
    out = tessera(venv, None, "up", "--help").stdout
    assert "15 nodes" in out and "9 standard + 6 archive" in out
    assert "(default: ./tessera-data)" in out and "(default: sqlite)" in out


def test_mount_without_fuse_extra_says_what_to_install(venv: Path, first: LocalCluster,
                                                       tmp_path: Path) -> None:
    r = tessera(venv, first, "volume", "mount", "v1", str(tmp_path / "mnt"))
    assert r.returncode == 1
    assert "pip install -e '.[fuse]'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_port_in_use_is_one_line(venv: Path, first: LocalCluster, tmp_path: Path) -> None:
    r = tessera(venv, None, "up", "--data", str(tmp_path / "other"), "--port", str(first.port),
                "--admin-port", str(free_port()), "--node-port", str(free_port()), timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "address already in use" in lines[0], r.stderr
    assert f"127.0.0.1:{first.port}" in lines[0]
    # the directory it made for the refused start held only its lock: nothing is left
    assert not (tmp_path / "other").exists(), list((tmp_path / "other").iterdir())


def test_wrong_admin_secret_says_what_to_do(venv: Path, first: LocalCluster) -> None:
    r = tessera(venv, first, "status", extra_env={"TESSERA_ADMIN_SECRET_KEY": "wrong" * 8})
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "(SignatureDoesNotMatch)" in line and "TESSERA_ADMIN_SECRET_KEY is not the " \
        "cluster's admin credential" in line and "tessera.env" in line, line


def test_config_set_day_seconds_says_restores_keep_their_day(venv: Path,
                                                             first: LocalCluster) -> None:
    """A user shortening days to try RestoreObject is told restores do not follow."""
    r = tessera(venv, first, "config", "set", "lifecycle.day_seconds", "86400")
    try:
        assert r.returncode == 0, r.stderr
        assert "restores (RestoreObject tiers) keep [archive] day_seconds" in r.stdout, r.stdout
    finally:
        assert tessera(venv, first, "config", "unset", "lifecycle.day_seconds").returncode == 0


def test_probes_at_debug_and_hang_ups_are_not_errors(first: LocalCluster) -> None:
    """Health probes do not fill node logs; a client that hangs up mid-upload is a 499 at info."""
    s3 = first.client(signature_version="s3v4")
    s3.create_bucket(Bucket="hangup")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "hangup", "Key": "k"})
    host, _, rest = url.removeprefix("http://").partition("/")
    with socket.create_connection((host.split(":")[0], int(host.split(":")[1]))) as s:
        s.sendall(f"PUT /{rest} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 8000000\r\n\r\n"
                  .encode() + b"x" * 200_000)
    log = first.data / "logs" / "gateway.log"
    deadline = time.monotonic() + 60
    while '"status":499' not in log.read_text():
        assert time.monotonic() < deadline, "the hang-up was never logged"
        time.sleep(0.1)
    errors = [line for line in log.read_text().splitlines() if '"level":"error"' in line]
    assert errors == []
    node_log = (first.data / "logs" / "n1.log").read_text()
    assert '"status":200' not in node_log or "/v1/health" not in node_log


def test_new_ports_on_an_existing_data_dir_are_applied(fresh_cluster: LocalCluster) -> None:
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="moved")
    s3.put_object(Bucket="moved", Key="k", Body=b"same data, new ports")
    assert c.proc is not None
    c.proc.send_signal(signal.SIGTERM)  # as an operator's kill or Ctrl-C: it says it stopped
    out, _ = c.proc.communicate(timeout=60)
    assert c.proc.returncode == 0, out
    assert f"Tessera stopped: every process it started has exited; data kept in " \
        f"{c.data.resolve()}" in out, out
    c.proc = None
    old = c.port
    c.port, c.admin_port = free_port(), free_port()
    c.node_port = free_port([f"127.0.{z}.{i}" for z in (1, 2, 3) for i in (1, 2, 3, 11, 12)])
    c.start()
    assert c.endpoint == f"http://127.0.0.1:{c.port}" and c.port != old
    assert f":{c.node_port}" in (c.data / "tessera.toml").read_text()
    body = c.client().get_object(Bucket="moved", Key="k")["Body"].read()
    assert body == b"same data, new ports"


def test_second_up_on_a_running_data_dir_is_refused(venv: Path, first: LocalCluster) -> None:
    """Two clusters on one directory would be two writers; the first's config must stay."""
    config, env = (first.data / "tessera.toml").read_text(), (first.data / "tessera.env")
    env_before = env.read_text()
    r = tessera(venv, None, "up", "--data", str(first.data), "--port", str(free_port()),
                "--admin-port", str(free_port()), "--node-port", str(free_port()), timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another `tessera up`" in lines[0], r.stderr
    assert (first.data / "tessera.toml").read_text() == config
    assert env.read_text() == env_before
    assert tessera(venv, first, "status").returncode == 0


@pytest.mark.parametrize("port", ["99999", "0", "abc"])
def test_bad_port_is_a_usage_error(venv: Path, tmp_path: Path, port: str) -> None:
    r = tessera(venv, None, "up", "--data", str(tmp_path / "d"), "--port", port)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "argument --port" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("url", ["notaurl", "http://127.0.0.1:99999", "ftp://x", "S3"])
def test_bad_admin_url_is_one_line(venv: Path, first: LocalCluster, url: str) -> None:
    """A wrong TESSERA_ADMIN_URL says what to use instead, in one line, exit 1."""
    bad = first.endpoint if url == "S3" else url  # "S3": the S3 endpoint, not the admin one
    r = tessera(venv, first, "tenant", "list", extra_env={"TESSERA_ADMIN_URL": bad})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "admin endpoint" in lines[0]


def test_key_list_of_an_unknown_tenant_is_an_error(venv: Path, first: LocalCluster) -> None:
    r = tessera(venv, first, "key", "list", "--tenant", "no-such-tenant")
    assert r.returncode == 1 and "NoSuchTenant" in r.stderr, r.stdout + r.stderr
    ok = tessera(venv, first, "key", "list", "--tenant", "default")
    assert ok.returncode == 0 and "default" in ok.stdout, ok.stderr


def test_misspelt_public_access_flag_changes_nothing(venv: Path, first: LocalCluster) -> None:
    """A typo in --block-public-access is refused; it once turned every flag off."""
    on = tessera(venv, first, "tenant", "update", "default", "--block-public-access", "all")
    assert on.returncode == 0 and "RestrictPublicBuckets" in on.stdout, on.stderr
    for bad in ("bogus", "BlockPublicAcls,BlockPublicAcl"):
        r = tessera(venv, first, "tenant", "update", "default", "--block-public-access", bad)
        assert r.returncode == 1 and "unknown --block-public-access flag" in r.stderr, r.stderr
    shown = json.loads(tessera(venv, first, "tenant", "show", "default", "--json").stdout)
    assert all(shown["public_access_block"].values()) and len(shown["public_access_block"]) == 4
    off = tessera(venv, first, "tenant", "update", "default", "--block-public-access", "none")
    assert off.returncode == 0 and "public access block none" in off.stdout, off.stderr


def test_a_second_gateway_or_node_on_taken_ports_is_one_line(venv: Path,
                                                             first: LocalCluster) -> None:
    """Each names the address it wanted and the program, and exits 1 (no traceback)."""
    config = str(first.data / "tessera.toml")
    gw = tessera(venv, None, "gateway", "--config", config, "--workers", "2")
    lines = gw.stderr.strip().splitlines()
    assert gw.returncode == 1 and len(lines) == 1, gw.stderr
    assert lines[0].startswith("tessera gateway: cannot start on S3 127.0.0.1:") and \
        f":{first.port}" in lines[0]
    node = tessera(venv, None, "node", "--config", config, "--id", "n1")
    assert node.returncode == 1 and node.stderr.startswith("tessera node: cannot serve on"), \
        node.stderr


@pytest.mark.parametrize("args", [("status",), ("node", "list"), ("tenant", "list")])
def test_output_to_a_reader_that_left_ends_quietly(venv: Path, first: LocalCluster,
                                                   args: tuple[str, ...]) -> None:
    """`tessera status | head -1`: once the reader is gone, exit 141 (as SIGPIPE would) with
    nothing on stderr, never a traceback or an `[Errno 32] Broken pipe` error line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(first.env)
    env["PATH"] = f"{venv}:{env.get('PATH', '')}"
    p = subprocess.Popen(["tessera", *args], env=env, cwd=venv, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader leaves before the first line is written
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141, err
    assert err == ""


def test_a_child_that_exits_is_named_with_how_to_restart_it(
        fresh_cluster: LocalCluster) -> None:
    """`tessera up` does not restart a node that died: its warning says so, and what to do."""
    proc = fresh_cluster.proc
    assert proc is not None and proc.stdout is not None
    fresh_cluster.kill("n5")
    line = ""
    while "exited with status" not in line:
        line = proc.stdout.readline()
        assert line, "tessera up exited"
    assert line.startswith("warning: n5 exited with status -9; see "), line
    assert "stays down" in line and "stopped (Ctrl-C) and started again" in line, line


def test_status_and_admin_commands_take_config(venv: Path, first: LocalCluster) -> None:
    """`tessera status --config FILE`, as fsck, volume and lifecycle take it (newuser18: an
    argparse error): the admin endpoint from the file, the credential from the tessera.env
    beside its data; nothing from the environment. A wrong file is one line."""
    bare = {k: "" for k in first.env}  # none of tessera.env's variables set
    config = str(first.data / "tessera.toml")
    r = tessera(venv, None, "status", "--config", config, extra_env=bare)
    assert r.returncode == 0 and r.stdout.startswith("profile "), r.stderr
    for args in (("tenant", "list"), ("kms", "list"), ("status", "--json")):
        r = tessera(venv, None, *args, "--config", config, extra_env=bare)
        assert r.returncode == 0, (args, r.stderr)
    r = tessera(venv, None, "status", "--config", str(first.data / "missing.toml"),
                extra_env=bare)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "missing.toml" in r.stderr, \
        r.stderr


def test_tenant_delete_asks_when_the_tenant_has_kms_keys(venv: Path,
                                                         first: LocalCluster) -> None:
    """Deleting a tenant destroys its KMS keys (newuser18: without a word). Now it says so
    and, without a terminal to ask on, refuses unless `--yes`; a tenant without KMS keys is
    deleted as before."""
    assert tessera(venv, first, "tenant", "create", "t19kms").returncode == 0
    assert tessera(venv, first, "kms", "create", "k19", "--tenant", "t19kms").returncode == 0
    r = tessera(venv, first, "tenant", "delete", "t19kms")
    assert r.returncode == 1, r.stdout
    assert "still has 1 KMS key(s) (alias/k19" in r.stderr and "--yes" in r.stderr \
        and r.stderr.count("\n") == 1, r.stderr
    assert tessera(venv, first, "tenant", "show", "t19kms").returncode == 0  # still there
    r = tessera(venv, first, "tenant", "delete", "t19kms", "--yes")
    assert r.returncode == 0 and "deleted" in r.stdout, r.stderr
    assert tessera(venv, first, "tenant", "show", "t19kms").returncode == 1
    assert tessera(venv, first, "tenant", "create", "t19plain").returncode == 0
    r = tessera(venv, first, "tenant", "delete", "t19plain")
    assert r.returncode == 0, r.stderr
