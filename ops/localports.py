"""Ports of a `tessera up` cluster: move them on an existing data directory, check them free.

A data directory remembers its ports in `tessera.toml` (gateway `listen`, `admin_listen`,
each `[[nodes]]` address); `tessera.env`'s endpoints are rewritten from it at every start.
Ports are not part of any stored record (manifests name nodes by id), so `tessera up --port P` on an existing
directory rewrites those lines and the cluster comes up on the new ports with its data.
"""

from __future__ import annotations

import errno
import os
import random
import re
import socket
from collections import deque
from pathlib import Path

from storage.config import Config, load_config

_LISTEN = re.compile(r'^(\s*(?:listen|admin_listen|address)\s*=\s*")([^"]*):(\d+)(".*)$')


def _set_port(line: str, key_port: dict[str, int | None]) -> str:
    m = _LISTEN.match(line)
    if not m:
        return line
    key = m.group(1).split("=")[0].strip()
    port = key_port.get(key)
    return line if port is None else f"{m.group(1)}{m.group(2)}:{port}{m.group(4)}"


def move_ports(config: Path, port: int | None, admin_port: int | None,
               node_port: int | None) -> list[str]:
    """Rewrite the config's ports where a new one is given; what changed."""
    before = load_config(config)
    wanted = {"listen": port, "admin_listen": admin_port, "address": node_port}
    lines = config.read_text().splitlines(keepends=True)
    text = "".join(_set_port(line.rstrip("\n"), wanted) + ("\n" if line.endswith("\n") else "")
                   for line in lines)
    tmp = config.with_suffix(".toml.tmp")
    tmp.write_text(text)
    try:
        after = load_config(tmp)
    except Exception:
        tmp.unlink()
        raise
    changes = []
    if before.gateway.listen != after.gateway.listen:
        changes.append(f"S3 {before.gateway.listen} -> {after.gateway.listen}")
    if before.gateway.admin_listen != after.gateway.admin_listen:
        changes.append(f"admin {before.gateway.admin_listen} -> {after.gateway.admin_listen}")
    moved = [n.id for n, m in zip(before.nodes, after.nodes, strict=True)
             if n.address != m.address]
    if moved:
        changes.append(f"{len(moved)} nodes to port {node_port}")
    if not changes:
        tmp.unlink()
        return []
    os.replace(tmp, config)  # (tessera.env follows at the start: `localcluster.refresh_env`)
    return changes


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def check_free(cfg: Config, listens: list[tuple[str, str]]) -> None:
    """Raise one plain line naming the first address already taken (gateways, then nodes)."""
    wanted = [(a, f"S3 port of gateway {i + 1}" if i else "S3 port") for i, (a, _) in
              enumerate(listens)]
    wanted += [(b, f"admin port of gateway {i + 1}" if i else "admin port") for i, (_, b) in
               enumerate(listens)]
    wanted += [(n.address, f"node {n.id}") for n in cfg.nodes]
    for addr, what in wanted:
        host, port = _host_port(addr)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise RuntimeError(
                        f"{addr} ({what}): address already in use; is another cluster "
                        f"running? choose other ports (--port, --admin-port, --node-port)"
                    ) from None
                raise RuntimeError(f"{addr} ({what}): cannot listen: {exc.strerror}") from None


def free_port(hosts: list[str] | None = None) -> int:
    """A TCP port free on 127.0.0.1 and on every given host (for clusters started on a
    fresh set of ports: tests, benchmarks, the chaos harness).

    Chosen below the kernel's ephemeral range, so no outgoing connection (etcd peers, node
    clients, other tests) can take it between this check and the server's bind: a port from
    `bind(0)` is an ephemeral one, and that race made `tessera up` refuse a taken port.
    $TESSERA_FREE_PORTS=LOW-HIGH narrows the choice to [LOW, HIGH), so concurrent users
    (pytest-xdist workers, tests/xdist_groups.py) never pick the same port.

    A port handed out lately by this process is not handed out again (up to half the range):
    callers pick several ports before any is bound (`tessera up`'s S3, admin and node ports),
    and two equal picks made a cluster refuse to start."""
    low, high = free_port_range()
    keep = min(_RECENT.maxlen or 0, (high - low) // 2)
    recent = set(list(_RECENT)[len(_RECENT) - keep:]) if keep else set()
    rnd = random.SystemRandom()
    for _ in range(500):
        port = rnd.randrange(low, high)
        if port in recent:
            continue
        try:
            for h in ["127.0.0.1", *(hosts or [])]:
                with socket.socket() as s:
                    s.bind((h, port))
        except OSError:
            continue
        _RECENT.append(port)
        return port
    raise RuntimeError("no free port")


_RECENT: deque[int] = deque(maxlen=64)  # the ports `free_port` handed out last, newest last


FREE_PORTS_ENV = "TESSERA_FREE_PORTS"


def free_port_range() -> tuple[int, int]:
    """Where `free_port` picks: $TESSERA_FREE_PORTS ("LOW-HIGH"), else from 10000 to just
    below the ephemeral range (room for a few consecutive ports above the one picked)."""
    if spec := os.environ.get(FREE_PORTS_ENV):
        lo, _, hi = spec.partition("-")
        try:
            low, high = int(lo), int(hi)
        except ValueError:
            raise RuntimeError(f"${FREE_PORTS_ENV} is not LOW-HIGH: {spec!r}") from None
        if not 1024 <= low < high <= 65536:
            raise RuntimeError(f"${FREE_PORTS_ENV} is not a port range: {spec!r}")
        return low, high
    return 10000, _ephemeral_low() - 16


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 by default on Linux)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 12000)
