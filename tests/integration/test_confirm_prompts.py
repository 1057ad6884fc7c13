"""The `[y/N]` question of `tessera tenant delete` (review19c L6): asked on stderr, so that
with `--json` stdout holds the JSON document alone; and the delete names the KMS keys the
operator confirmed, so a key made after the question is never destroyed unconfirmed."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from ops.admincli import CliError, admin_request
from tests.integration.cluster import LocalCluster


def cli(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env={**os.environ, **c.env},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_the_question_goes_to_stderr_and_json_stdout_parses(cluster: LocalCluster) -> None:
    assert cli(cluster, "tenant", "create", "t19ask").returncode == 0
    assert cli(cluster, "kms", "create", "k19ask", "--tenant", "t19ask").returncode == 0
    master, slave = pty.openpty()  # stdin is a terminal: the command asks
    try:
        os.write(master, b"y\n")
        r = subprocess.run([sys.executable, "-m", "ops.cli", "tenant", "delete", "t19ask",
                            "--json"], env={**os.environ, **cluster.env}, stdin=slave,
                           capture_output=True, text=True, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted"] is True, r.stdout  # nothing but the document
    assert "delete tenant t19ask and its KMS keys? [y/N]" in r.stderr, r.stderr
    assert cli(cluster, "tenant", "show", "t19ask").returncode == 1


def test_a_delete_confirmed_for_other_keys_is_refused(cluster: LocalCluster) -> None:
    assert cli(cluster, "tenant", "create", "t19toctou").returncode == 0
    assert cli(cluster, "kms", "create", "k19a", "--tenant", "t19toctou").returncode == 0
    keys = admin_request("GET", "/tenants/t19toctou/kms-keys", env=cluster.env)["keys"]
    confirmed = ",".join(k["key_id"] for k in keys)
    # a key made after the operator was asked about the first one
    assert cli(cluster, "kms", "create", "k19b", "--tenant", "t19toctou").returncode == 0
    with pytest.raises(CliError, match="changed since they were listed"):
        admin_request("DELETE", "/tenants/t19toctou", query={"kms_keys": confirmed},
                      env=cluster.env)
    assert cli(cluster, "tenant", "show", "t19toctou").returncode == 0
    left = admin_request("GET", "/tenants/t19toctou/kms-keys", env=cluster.env)["keys"]
    assert len(left) == 2, left
    r = cli(cluster, "tenant", "delete", "t19toctou", "--yes")
    assert r.returncode == 0, r.stderr
