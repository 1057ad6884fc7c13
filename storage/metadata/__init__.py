"""The metadata interface: an ordered key-value store with compare-and-swap transactions.

Keys are bytes ordered bytewise; values are opaque bytes (versioned msgpack records, see
`storage.records`). Every stored value has a revision that changes on every write, which
`txn` compares against (revision 0 means "absent").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from storage.metadata.etcd_tls import EtcdClientTLS


@dataclass(frozen=True)
class Item:
    key: bytes
    value: bytes
    revision: int


@dataclass(frozen=True)
class Txn:
    """Apply puts and deletes only if every compared key is at the given revision (0 = absent)."""

    compares: dict[bytes, int] = field(default_factory=dict)
    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: tuple[bytes, ...] = ()


class MetadataStore(Protocol):
    # whether `auth_stamp` has changed for every process once an auth write returned
    auth_stamp_exact: bool

    async def auth_stamp(self) -> int:
        """A number that changes whenever a tenant or access-key record is written."""
        ...

    async def get(self, key: bytes) -> Item | None: ...

    async def put(self, key: bytes, value: bytes) -> int: ...

    async def delete(self, key: bytes) -> bool: ...

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]: ...

    async def txn(self, txn: Txn) -> bool: ...

    async def txn_or_read(self, txn: Txn, reads: tuple[bytes, ...]
                          ) -> tuple[bool, dict[bytes, Item | None]]:
        """`txn`; if its compares fail, the current items of `reads` instead (None = absent),
        read atomically in the same round trip, so a compare-and-swap retry needs no read."""
        ...

    async def close(self) -> None: ...


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix`."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\xff" * 64


async def open_store(backend: str, path: str, etcd_endpoints: tuple[str, ...] = (),
                     etcd_tls: EtcdClientTLS | None = None) -> MetadataStore:
    if backend == "sqlite":
        from storage.metadata.sqlite import SqliteStore

        return await SqliteStore.open(path)
    if backend == "etcd":
        from storage.metadata.etcd import EtcdStore

        return await EtcdStore.open(etcd_endpoints, etcd_tls)
    raise ValueError(f"metadata backend {backend!r} is not available")
