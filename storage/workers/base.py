"""What the repair worker and the rebalancer share: both write shard files to nodes.

Their collaborators (config, metadata, node client, health, CPU pool), the pacing of the
shard bytes they write (`storage/throttle.py`: full rate while clients are idle, while they
are active a rate that adapts to the event loop's lag above a small floor, judged by
`storage/activity.py`), and their cumulative counters
under `(S, name)`, restored when a gateway takes over the worker. Also the key's check of
a rebuild that may read only k sources (`_guard`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Executor
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from storage import pacing_settings
from storage.adaptive_rate import AdaptiveRate
from storage.buffers import BufferPool
from storage.config import DEFAULT_BUSY_RATE, DEFAULT_RATE, Config
from storage.errors import IntegrityError, KeyCheckUnavailable, StorageError
from storage.health import OUT, HealthTracker
from storage.metadata import MetadataStore
from storage.records import unpack
from storage.shards.transport import NodeTransport
from storage.throttle import Throttle

if TYPE_CHECKING:
    from storage.pipeline import StripeCodec
    from storage.rebuild import Guard, Reference
    from storage.workers.manifests import Manifest

MIB = 2**20
PACING_S = 2.0  # the published pacing figures are refreshed at most this often
POOL_BYTES = 64 * MIB  # free source-frame buffers a worker keeps for its rebuilds at most

Stats = TypeVar("Stats")


def _wait_for_return(_seg: int, _last: bool, _plain_len: int, _blocks: dict[int, bytes],
                     ) -> tuple[bytes, list[int]]:
    """The check of a keyless (SSE-C) segment read from k sources while a shard holder
    may return (not OUT): refused (the rebuild stops with SourcesDisagree and backs off)."""
    raise IntegrityError("no key to check a rebuild from k sources (SSE-C) while a lost "
                         "shard's node may return: waiting for it, or for it to be OUT")


async def read_counters(meta: MetadataStore, key: bytes) -> dict[str, Any]:
    """The counters last published under `key` (empty when never published)."""
    item = await meta.get(key)
    if item is None:
        return {}
    d = unpack(item.value)
    d.pop("fv", None)
    return d


def _idle() -> bool:
    return False


class ShardWorker(Generic[Stats]):
    """Base of the workers that rebuild or move shards (see the module docstring)."""

    name: str
    stats_key: bytes
    stats_type: type[Stats]
    # Set by the gateway (`Cluster.workers`): a stripe's codec with the object's key (None
    # without one), for the keyed checks of rebuilds (`_guard`; repair's rebuilds of liars).
    stripe_codec: Callable[[Manifest], Awaitable[StripeCodec | None]] | None = None

    def __init__(self, cfg: Config, meta: MetadataStore, client: NodeTransport,
                 health: HealthTracker, cpu: Executor, rate_bytes_s: float,
                 busy_rate_bytes_s: float, clients_busy: Callable[[], bool] | None = None,
                 busy_lag_ms: float = 0.0) -> None:
        """`clients_busy` says whether S3 clients are active (None: never, as in tests);
        `busy_lag_ms` > 0 makes the busy rate adaptive (`storage/adaptive_rate.py`)."""
        self._cfg = cfg
        self._meta = meta
        self._client = client
        self._health = health
        self._cpu = cpu
        self.adaptive = AdaptiveRate(busy_rate_bytes_s, rate_bytes_s, busy_lag_ms / 1000)
        self._throttle = Throttle(rate_bytes_s, busy_rate_bytes_s, clients_busy or _idle,
                                  adaptive=self.adaptive)
        self.stats: Stats = self.stats_type()
        self._loaded = False
        self._pacing_next = 0.0
        self._override_next = 0.0
        self._pool = BufferPool(POOL_BYTES)  # rebuild source frames are received into these

    def _guard(self, man: Manifest, waiting: Collection[int] = ()) -> Guard | None:
        """The key's check for a rebuild's segments read from only k sources (m shards
        lost, or a spare whose read failed): without it a liar nobody has named yet is
        decoded into every rebuilt shard and committed, and the stripe is then lost for good
        though its lost shards' nodes may come back. Looked up once, and only when a segment
        needs it (the common one-lost-shard rebuild reads a spare and never asks). Without
        a key (SSE-C) nothing can check: refused (`_wait_for_return`) while the node of an
        index in `waiting` (not read, and not known gone: down, or judged lost by an
        assessment its node's return has made stale) is anything but OUT, since it may hold
        an honest copy; unchecked once all are OUT (gone for good). None
        (unchecked) for a shredded tenant. A failed lookup (the store or the KMS) raises
        KeyCheckUnavailable: the stripe is deferred."""
        if self.stripe_codec is None:
            return None
        resolve, memo = self.stripe_codec, []

        async def check() -> Reference | None:
            if not memo:
                try:
                    codec = await resolve(man)
                except StorageError as exc:
                    raise KeyCheckUnavailable(f"the key's check could not be looked up: {exc}"
                                              ) from exc
                if codec is not None and codec.cipher is not None:
                    memo.append(codec.reference)
                elif codec is not None and self._may_return(man, waiting):
                    memo.append(_wait_for_return)
                else:
                    memo.append(None)
            return memo[0]
        return check

    def _may_return(self, man: Manifest, waiting: Collection[int]) -> bool:
        """Whether the node of an index in `waiting` is in the cluster and not OUT."""
        states, nodes = self._health.states, man.part.nodes
        return any(i < len(nodes) and nodes[i] is not None and nodes[i] in states and
                   states[str(nodes[i])].state != OUT for i in waiting)

    async def _refresh_pacing(self) -> None:
        """At most every PACING_S: the busy lag bound in force (`tessera config set
        NAME.busy_lag_ms`, storage/pacing_settings.py, else tessera.toml's)."""
        now = time.monotonic()
        if now < self._override_next:
            return
        self._override_next = now + PACING_S
        ms = await pacing_settings.in_force(self._meta, self._cfg, f"{self.name}.busy_lag_ms")
        self.adaptive.lag_bound_s = ms / 1000

    def _note_pacing(self) -> bool:
        """Refresh the stats' `pacing` (rate in force, busy rate, its floor, bound and the
        loop lag) at most every PACING_S; True when it changed (worth publishing)."""
        now = time.monotonic()
        if now < self._pacing_next:
            return False
        self._pacing_next = now + PACING_S
        pacing = {**self.adaptive.snapshot(), "adaptive": self.adaptive.enabled,
                  "clients_busy": self._throttle.busy(), "rate_now": round(self._throttle.rate()),
                  "rate_idle": round(self._throttle.max_rate)}
        if pacing == getattr(self.stats, "pacing", None):
            return False
        self.stats.pacing = pacing  # type: ignore[attr-defined]
        return True

    async def _load_stats(self) -> None:
        """Once: continue the published counters (they are cumulative across gateways)."""
        if self._loaded:
            return
        old = await read_counters(self._meta, self.stats_key)
        names = {f.name for f in fields(self.stats_type)}  # type: ignore[arg-type]
        self.stats = self.stats_type(**{k: v for k, v in old.items() if k in names})
        self._loaded = True


__all__ = ["DEFAULT_BUSY_RATE", "DEFAULT_RATE", "MIB", "ShardWorker", "read_counters"]
