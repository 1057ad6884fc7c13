"""A real local cluster for tests: `tessera up` in a temporary directory on free ports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from ops.botoconfig import no_retries
from ops.envfile import read_env
from ops.localports import free_port
from storage.keyspace import object_key
from storage.records import ObjectVersion
from tests.held_shards import HeldShard, OnlineDelete, held, http_delete, shard_at

READY_TIMEOUT_S = 300.0  # a bound on a hung start: at load 80 a start can take over 90 s
ZONE_HOSTS = [f"127.0.{z}.{i}" for z in (1, 2, 3) for i in (1, 2, 3, 11, 12)]
ETCD_HOSTS = ["127.0.1.10", "127.0.2.10", "127.0.3.10"]


def wait_for(cond: Callable[[], Any], what: str = "condition", timeout: float = 60.0,
             interval: float = 0.2) -> Any:
    """Poll `cond` until it returns something truthy (returned) or `timeout` seconds pass
    (AssertionError naming `what`). The interval paces the polling; it synchronises nothing."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_advancing(progress: Callable[[], tuple[bool, Hashable]], what: str,
                   stall_s: float = 120.0, limit_s: float = 900.0,
                   interval: float = 0.2) -> None:
    """Poll `progress` -> (done, mark) until done. A wait on background work that a loaded
    machine slows but that must keep advancing: it fails (AssertionError naming `what`) when
    the mark (e.g. how many restores are done) stays the same for `stall_s`, or after
    `limit_s` in all (a bound on churn that never finishes), not when the whole merely
    takes longer than an idle machine would."""
    last: Hashable = None
    start = since = time.monotonic()
    while True:
        done, mark = progress()
        if done:
            return
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"timed out waiting for {what}: not done in {limit_s:g} s "
                                 f"(at {mark!r})")
        if mark != last:
            last, since = mark, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise AssertionError(f"timed out waiting for {what}: no progress for {stall_s:g} s "
                                 f"(at {mark!r})")
        time.sleep(interval)


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Files below root holding any needle, as "path: needle"; files removed meanwhile hold nothing."""
    hits = []
    for p in sorted(root.rglob("*")):
        try:
            if not p.is_file() or p.is_symlink():
                continue
            data = p.read_bytes()
        except FileNotFoundError:  # GC or an atomic rename of a running cluster
            continue
        hits += [f"{p}: {n[:12]!r}" for n in needles if n in data]
    return hits


def audit_log(data: Path) -> list[dict]:
    """The current admin audit entries, oldest first: audit.log (actions) and
    audit-refused.log (refused requests) merged by time."""
    files = [data / "audit" / "audit.log", data / "audit" / "audit-refused.log"]
    entries = [json.loads(line) for f in files if f.exists()
               for line in f.read_text().splitlines()]
    return sorted(entries, key=lambda e: e["ts"])


def fetch(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    """Status and body of one plain (unsigned unless the URL is presigned) HTTP request."""
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """Stop processes a test started itself (restarted nodes, a second gateway): TERM, then
    KILL after 10 s."""
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()



@dataclass
class LocalCluster:
    data: Path
    port: int = 0
    admin_port: int = 0
    node_port: int = 0
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)
    metadata: str = "sqlite"
    etcd_port: int = 0
    etcd_peer_port: int = 0
    up_args: list[str] = field(default_factory=list)  # extra `tessera up` flags
    tessera: list[str] = field(default_factory=lambda: [sys.executable, "-m", "ops.cli"])
    # an edit of the config `tessera up` would write at a first start, in force from it
    first_config: Callable[[str], str] | None = None

    def start(self) -> LocalCluster:
        if not self.port:
            self.port, self.admin_port = free_port(), free_port()
            self.node_port = free_port(ZONE_HOSTS)
        if self.first_config is not None and not (self.data / "tessera.toml").exists():
            self._write_first_config(self.first_config)
        extra = []
        if self.metadata == "etcd":
            if not self.etcd_port:
                self.etcd_port = free_port(ETCD_HOSTS)
                self.etcd_peer_port = free_port(ETCD_HOSTS)
                while self.etcd_peer_port in (self.etcd_port, self.node_port):
                    self.etcd_peer_port = free_port(ETCD_HOSTS)
            extra = ["--metadata", "etcd", "--etcd-port", str(self.etcd_port),
                     "--etcd-peer-port", str(self.etcd_peer_port)]
        self.proc = subprocess.Popen(
            [*self.tessera, "up", "--data", str(self.data),
             "--port", str(self.port), "--admin-port", str(self.admin_port),
             "--node-port", str(self.node_port), *extra, *self.up_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        out = []
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("tessera up exited:\n" + "".join(out))
            out.append(line)
            if "cluster ready" in line:
                break
        else:
            self.stop()
            raise RuntimeError("tessera up not ready:\n" + "".join(out))
        self.env = read_env(self.data)
        return self

    def _write_first_config(self, edit: Callable[[str], str]) -> None:
        """Write the config `tessera up` writes at a first start (same function), edited:
        `tessera up` then starts from it (and bootstraps, as tessera.env is missing), so a
        setting applies without a stop, an edit and a restart. Default clusters only."""
        from ops.localcluster import default_config

        assert self.metadata == "sqlite" and not self.up_args, self.up_args
        text = default_config(self.data.resolve(), self.port, self.node_port, self.admin_port)
        edited = edit(text)
        assert edited != text, "the edit changed nothing"
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "tessera.toml").write_text(edited)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    @property
    def endpoint(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    def client(self, **config: object):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
            config=no_retries(**config))

    def server_errors(self) -> int:
        """The 5xx answers the gateway counted so far (every worker's, summed by worker 0):
        a client that retries whatever it is told (rclone: its SDK and its pacer) hides a
        5xx it retried, and a test compares this before and after instead."""
        with urllib.request.urlopen(self.env["TESSERA_ADMIN_URL"] + "/metrics",  # noqa: S310
                                    timeout=30) as r:
            text = r.read().decode()
        return sum(int(float(m[1])) for m in re.finditer(
            r'^tessera_s3_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)$', text, re.M))

    def cli_env(self) -> dict[str, str]:
        """An environment for the aws CLI against this cluster: the process environment
        without the caller's AWS settings, plus the cluster's keys, no config files, one
        attempt."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})
        env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                   AWS_MAX_ATTEMPTS="1")
        return env

    def tenant_client(self, name: str, profile: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
                      reuse_name: bool = False):
        """A SigV4 boto3 client for a new tenant `name` (its admin fields set to `profile`;
        `reuse_name`: the name of a deleted tenant)."""
        from ops.admincli import admin_request

        admin_request("POST", "/tenants", {"name": name, **({"reuse_name": True} if reuse_name
                                                            else {})}, env=self.env)
        if profile:
            admin_request("PATCH", f"/tenants/{name}", profile, env=self.env)
        cred = admin_request("POST", "/keys", {"tenant": name}, env=self.env)
        return boto3.client("s3", endpoint_url=self.endpoint,
                            aws_access_key_id=cred["access_key_id"],
                            aws_secret_access_key=cred["secret_access_key"],
                            region_name="us-east-1",
                            config=no_retries(signature_version="s3v4"))

    def pid(self, name: str) -> int:
        return int((self.data / "run" / f"{name}.pid").read_text())

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid(name), sig)

    def restart_node(self, node_id: str) -> subprocess.Popen:
        """Start a node again by hand (tessera up does not restart children)."""
        p = subprocess.Popen([sys.executable, "-m", "nodes", "--config",
                              str(self.data / "tessera.toml"), "--id", node_id],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert "ready" in line, line
        (self.data / "run" / f"{node_id}.pid").write_text(f"{p.pid}\n")
        return p

    @property
    def db_path(self) -> Path:
        """The cluster's SQLite metadata file."""
        cfg = tomllib.loads((self.data / "tessera.toml").read_text())
        return self.data / cfg.get("metadata", {}).get("path", "meta/tessera.db")

    def db_get(self, key: bytes) -> bytes | None:
        """One raw metadata value, read from the SQLite file (read-only, beside the gateway)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT v FROM kv WHERE k=?", (key,)).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def manifest(self, bucket: str, key: str) -> ObjectVersion:
        """The current version record of bucket/key."""
        raw = self.db_get(object_key(bucket, key))
        assert raw is not None, f"no manifest for {bucket}/{key}"
        return ObjectVersion.decode(raw)

    def _node_access(self, node_id: str) -> tuple[str, bytes] | None:
        """(url, cluster secret) of node `node_id`, or None for a node the config lacks."""
        from storage.shards.auth import load_or_create_secret

        cfg = tomllib.loads((self.data / "tessera.toml").read_text())
        address = {n["id"]: n["address"] for n in cfg.get("nodes", [])}
        if node_id not in address:
            return None
        return (f"http://{address[node_id]}",
                load_or_create_secret(self.data / "secrets" / "cluster.key"))

    def _online_delete(self, node_id: str) -> OnlineDelete | None:
        """A signed DELETE to node `node_id` (None for a node the config does not list)."""
        access = self._node_access(node_id)
        return None if access is None else http_delete(*access, node_id)

    def listed(self, node_id: str) -> set[str]:
        """The shard ids node `node_id` says it holds (its list API, every page): what its
        own index knows, not what its disk happens to hold."""
        from storage.shards.auth import sign

        access = self._node_access(node_id)
        assert access is not None, node_id
        url, secret = access
        out: set[str] = set()
        after = ""
        while True:
            path = f"/v1/shards?after={after}&limit=1000"
            req = urllib.request.Request(url + path, headers=sign(secret, "GET", path, node_id))
            with urllib.request.urlopen(req, timeout=60) as r:
                doc = json.loads(r.read())
            out.update(doc["shards"])
            if not doc["truncated"] or not doc["shards"]:
                return out
            after = doc["shards"][-1]

    def shard_files(self) -> dict[str, list[HeldShard]]:
        """The shards each node holds (files, or records in its packs), per node id; each
        is lost through the node when it answers, else on its disk (`tests.held_shards`)."""
        return {d.name: held(d, self._online_delete(d.name))
                for d in sorted((self.data / "nodes").iterdir())}

    def shard(self, node_id: str, sid: str) -> HeldShard:
        """Shard `sid` where node `node_id` reads it: its packed record, else its file's path
        (which may not exist), used like that Path."""
        return shard_at(self.data / "nodes" / node_id, sid, self._online_delete(node_id))
