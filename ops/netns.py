"""A zone topology in Linux network namespaces, for real zone-outage drills on one machine.

One namespace per zone (`tz1`, `tz2`, `tz3`, suffixed with a run tag so concurrent runs do
not collide) and a `core` namespace for gateways and clients. A bridge in the core namespace
links them: each zone has a veth pair, its core end a bridge port, its zone end holding the
zone's addresses (nodes 10.77.Z.1-3 and .11-12, etcd member 10.77.Z.10). The gateways use
10.77.0.1 on the bridge. Every address exists only inside these namespaces: nothing touches
the host's own network, and traffic never leaves the machine.

Cutting a zone sets its core-side veth down (as if the zone's uplink failed); healing sets it
up again. `destroy()` deletes the namespaces, which deletes the veths and the bridge with them.
Needs root (CAP_NET_ADMIN) and the `ip` command (iproute2).

`enter_netns(name)` moves the *calling thread* into a namespace (setns(2)); a thread pool
whose initializer calls it lets a test talk to the gateways with ordinary clients.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from dataclasses import dataclass

SUBNET = "10.77"
PREFIX_LEN = 16
CORE_IP = f"{SUBNET}.0.1"
NODE_HOSTS = (1, 2, 3, 11, 12)
ETCD_HOST = 10
CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    """An `ip` command failed (the message says which and why)."""


def ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {p.stderr.strip() or p.returncode}")


@dataclass
class ZoneNet:
    """Namespaces, veth pairs and the bridge of one drill; `tag` keeps names unique."""

    tag: str
    zones: int = 3
    created: bool = False

    @property
    def core(self) -> str:
        return f"tcore-{self.tag}"

    def zone_ns(self, z: int) -> str:
        return f"tz{z}-{self.tag}"

    @property
    def bridge(self) -> str:
        return f"tb{self.tag}"

    def link(self, z: int) -> str:
        """The core-side end of zone z's veth pair (cut it to isolate the zone)."""
        return f"tv{z}{self.tag}"

    def _peer(self, z: int) -> str:
        return f"tp{z}{self.tag}"

    @staticmethod
    def host(z: int, i: int) -> str:
        return f"{SUBNET}.{z}.{i}"

    def namespaces(self) -> list[str]:
        return [self.core] + [self.zone_ns(z) for z in range(1, self.zones + 1)]

    def create(self) -> ZoneNet:
        """Build the topology; on any failure remove what was made and raise NetnsError."""
        try:
            for ns in self.namespaces():
                ip("netns", "add", ns)
                self.created = True
                ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", self.core, "link", "add", self.bridge, "type", "bridge")
            ip("-n", self.core, "addr", "add", f"{CORE_IP}/{PREFIX_LEN}", "dev", self.bridge)
            ip("-n", self.core, "link", "set", self.bridge, "up")
            for z in range(1, self.zones + 1):
                ns, a, b = self.zone_ns(z), self.link(z), self._peer(z)
                ip("link", "add", a, "netns", self.core, "type", "veth", "peer", "name", b,
                   "netns", ns)
                ip("-n", self.core, "link", "set", a, "master", self.bridge)
                ip("-n", self.core, "link", "set", a, "up")
                for i in (*NODE_HOSTS, ETCD_HOST):
                    ip("-n", ns, "addr", "add", f"{self.host(z, i)}/{PREFIX_LEN}", "dev", b)
                ip("-n", ns, "link", "set", b, "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def cut(self, z: int) -> None:
        ip("-n", self.core, "link", "set", self.link(z), "down")

    def heal(self, z: int) -> None:
        ip("-n", self.core, "link", "set", self.link(z), "up")

    def destroy(self) -> list[str]:
        """Delete every namespace of the drill (idempotent); the errors, if any."""
        errors = []
        for ns in self.namespaces():
            p = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                               timeout=20)
            if p.returncode != 0 and "No such file" not in p.stderr:
                errors.append(p.stderr.strip())
        self.created = False
        return errors

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        """argv run inside namespace `ns` (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", ns, *argv]


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace `name` (sockets it opens live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)
