"""A local three-member etcd cluster, one member per zone, for `tessera up --metadata etcd`.

Members listen on 127.0.1.10 / 127.0.2.10 / 127.0.3.10 (one per zone, as in a real
deployment where each AZ runs one member), keep their data under `<data>/etcd/<member>`
and log to `<data>/logs/<member>.log`. Tests use the same class on free ports.

Members speak mutual TLS (`tls`, the default): https client and peer URLs, and a client or
peer without a certificate signed by the cluster CA (`<data>/tls`, ops/etcdcerts.py) is
refused, so reaching a member's port is not enough to read or delete metadata.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ops.etcdcerts import MEMBER_CN, ensure_certs
from storage.metadata.etcd_batch import MAX_REQUEST_BYTES  # the members' --max-request-bytes
from storage.metadata.etcd_tls import EtcdClientTLS, client_tls_in
from storage.parentdeath import dies_with_us_prefix

ETCD_HOSTS = ("127.0.1.10", "127.0.2.10", "127.0.3.10")
READY_TIMEOUT_S = 60.0
# Raft entries a member holds in memory (and in WAL files it may not purge) before it writes a
# snapshot and drops the older ones; it keeps 5,000 past a snapshot for slow followers. etcd
# 3.4's default, 100,000, is sized for small values: ours carry 4 KiB inline bodies, a batched
# commit ~27 KiB, so 100,000 entries would hold ~2.7 GB in each member, three on one host.
# 10,000 bounds that near 400 MB. Measured: members' CPU per Txn unchanged (1.54 vs 1.48 ms);
# RSS after 12,500 Txns of 2 PutObjects 285-297 -> 209-217 MiB (session 19).
SNAPSHOT_COUNT = 10_000


@dataclass(frozen=True)
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    tls: bool = False  # mutual TLS on both ports (members.json of a pre-TLS cluster: absent)

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.peer_port}"


def default_members(client_port: int, peer_port: int,
                    hosts: tuple[str, ...] = ETCD_HOSTS, tls: bool = True) -> list[EtcdMember]:
    """One member per zone host: etcd-az1, etcd-az2, etcd-az3."""
    return [EtcdMember(f"etcd-az{i}", h, client_port, peer_port, tls)
            for i, h in enumerate(hosts, start=1)]


@dataclass
class EtcdCluster:
    """Starts and stops the members as child processes (their own sessions)."""

    data_dir: Path
    members: list[EtcdMember]
    log_dir: Path
    run_dir: Path | None = None
    token: str = "tessera"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(m.client_url for m in self.members)

    @property
    def tls_dir(self) -> Path:
        """The cluster CA and certificates (made on first start: ops/etcdcerts.py)."""
        return self.data_dir / "tls"

    @property
    def client_tls(self) -> EtcdClientTLS | None:
        """The certificate a client shows the members (None: members check no client)."""
        return client_tls_in(self.tls_dir) if any(m.tls for m in self.members) else None

    def _tls_args(self, m: EtcdMember) -> list[str]:
        if not m.tls:
            return []
        d = self.tls_dir
        ca, cert, key = str(d / "ca.pem"), str(d / "member.pem"), str(d / "member.key")
        return ["--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert,
                "--key-file", key, "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
                "--peer-cert-file", cert, "--peer-key-file", key,
                # a peer must show the member certificate, not the client one every
                # gateway holds (same CA): a gateway host cannot speak Raft to members
                "--peer-cert-allowed-cn", MEMBER_CN]

    def _args(self, m: EtcdMember) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [*self._base_args(m, initial), *self._tls_args(m)]

    def _base_args(self, m: EtcdMember, initial: str) -> list[str]:
        return [
            etcd_binary(), "--name", m.name, "--data-dir", str(self.data_dir / m.name),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new", "--max-txn-ops", "1024",
            "--snapshot-count", str(SNAPSHOT_COUNT),
            # a 10,000-part object's record is ~1.7 MB (etcd's default cap: 1.5 MiB)
            "--max-request-bytes", str(MAX_REQUEST_BYTES),
            "--logger", "zap", "--log-outputs", "stderr",
        ]

    def start(self) -> EtcdCluster:
        """Start every member, then wait until each answers /health (a leader is elected)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(m.tls for m in self.members):
            ensure_certs(self.tls_dir, tuple(m.host for m in self.members))
        try:
            for m in self.members:
                self.start_member(m.name, wait=False)
            deadline = time.monotonic() + READY_TIMEOUT_S
            for m in self.members:
                self._wait_healthy(m, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def start_member(self, name: str, wait: bool = True) -> None:
        m = next(x for x in self.members if x.name == name)
        with open(self.log_dir / f"{m.name}.log", "ab") as log:
            # SIGTERM (a clean stop) when its starter dies unstopped: pytest SIGKILLed
            p = subprocess.Popen(dies_with_us_prefix(signal.SIGTERM) + self._args(m),
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        self.procs[m.name] = p
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / f"{m.name}.pid").write_text(f"{p.pid}\n")
        if wait:
            self._wait_healthy(m, time.monotonic() + READY_TIMEOUT_S)

    def _wait_healthy(self, m: EtcdMember, deadline: float) -> None:
        p = self.procs[m.name]
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"etcd member {m.name} exited with status {p.returncode}; "
                                   f"see {self.log_dir / (m.name + '.log')}")
            if member_healthy(m.client_url, tls=self.client_tls):
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd member {m.name} not healthy within {READY_TIMEOUT_S:.0f}s; "
                           f"see {self.log_dir / (m.name + '.log')}")

    def kill(self, name: str) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM each member and wait for it before the next: a leader told to stop hands
        its leadership to a member still running. Told all at once, the leader picked one
        that was stopping too and waited out etcd's request timeout (7 s) for it."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise RuntimeError("the etcd binary is not installed (Debian package etcd-server)")
    return path


def member_healthy(client_url: str, timeout_s: float = 2.0,
                   tls: EtcdClientTLS | None = None) -> bool:
    """True when the member answers /health with a leader (`tls`: the client certificate
    an https member requires)."""
    ctx: ssl.SSLContext | None = tls.ssl_context() if tls is not None else None
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=timeout_s,
                                    context=ctx) as r:
            return bool(json.loads(r.read()).get("health") == "true")
    except (OSError, urllib.error.URLError, ValueError):
        return False
