"""What the repair worker and the rebalancer share: both write shard files to nodes.

Their collaborators (config, metadata, node client, health, CPU pool), the pacing of the
shard bytes they write (`storage/throttle.py`: full rate while clients are idle, a small
floor while they are active, judged by `storage/activity.py`), and their cumulative counters
under `(S, name)`, restored when a gateway takes over the worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import fields
from typing import Any, Generic, TypeVar

from storage.activity import CLIENTS
from storage.config import Config
from storage.health import HealthTracker
from storage.metadata import MetadataStore
from storage.records import unpack
from storage.shards.client import NodeClient
from storage.throttle import Throttle

MIB = 2**20
DEFAULT_RATE = 200 * MIB  # shard bytes written per second while clients are idle
DEFAULT_BUSY_RATE = 4 * MIB  # ...and while clients are active

Stats = TypeVar("Stats")


def env_num(env: Mapping[str, str] | None, name: str, default: float) -> float:
    """A number from the environment (`os.environ` when `env` is None); default when unset."""
    raw = (os.environ if env is None else env).get(name)
    return float(raw) if raw not in (None, "") else default


def env_rates(env: Mapping[str, str] | None, prefix: str, rate: float,
              busy_rate: float) -> tuple[float, float]:
    """(rate, busy rate) in bytes/s from `<prefix>_RATE_MBPS` and `<prefix>_BUSY_RATE_MBPS`."""
    return (env_num(env, f"{prefix}_RATE_MBPS", rate / MIB) * MIB,
            env_num(env, f"{prefix}_BUSY_RATE_MBPS", busy_rate / MIB) * MIB)


async def read_counters(meta: MetadataStore, key: bytes) -> dict[str, Any]:
    """The counters last published under `key` (empty when never published)."""
    item = await meta.get(key)
    if item is None:
        return {}
    d = unpack(item.value)
    d.pop("fv", None)
    return d


class ShardWorker(Generic[Stats]):
    """Base of the workers that rebuild or move shards (see the module docstring)."""

    name: str
    stats_key: bytes
    stats_type: type[Stats]

    def __init__(self, cfg: Config, meta: MetadataStore, client: NodeClient,
                 health: HealthTracker, cpu: Executor, rate_bytes_s: float,
                 busy_rate_bytes_s: float, clients_busy: Callable[[], bool] = CLIENTS.busy
                 ) -> None:
        self._cfg = cfg
        self._meta = meta
        self._client = client
        self._health = health
        self._cpu = cpu
        self._throttle = Throttle(rate_bytes_s, busy_rate_bytes_s, clients_busy)
        self.stats: Stats = self.stats_type()
        self._loaded = False

    async def _load_stats(self) -> None:
        """Once: continue the published counters (they are cumulative across gateways)."""
        if self._loaded:
            return
        old = await read_counters(self._meta, self.stats_key)
        names = {f.name for f in fields(self.stats_type)}  # type: ignore[arg-type]
        self.stats = self.stats_type(**{k: v for k, v in old.items() if k in names})
        self._loaded = True


__all__ = ["DEFAULT_BUSY_RATE", "DEFAULT_RATE", "MIB", "ShardWorker", "env_num", "env_rates",
           "read_counters"]
