"""Runtime overrides of how hard repair and rebalancing may press while clients are active.

`[repair] busy_lag_ms` and `[rebalance] busy_lag_ms` (storage/adaptive_rate.py: the event
loop lag under which the busy rate grows) can be changed on a running cluster with
`tessera config set repair.busy_lag_ms 50` (`unset` returns to tessera.toml's value), as an
operator turns Ceph's recovery knobs: the override is one record in the metadata store,
which the worker reads every few seconds wherever it runs. 0 turns the adaptation off (the
fixed `busy_rate_bytes_s` floor).
"""

from __future__ import annotations

import msgpack

from storage.config import Config
from storage.config_sections import MAX_BUSY_LAG_MS
from storage.keyspace import system_key
from storage.metadata import MetadataStore

PACING_SETTINGS = ("repair.busy_lag_ms", "rebalance.busy_lag_ms")


def configured(cfg: Config, name: str) -> float:
    """tessera.toml's value of `name` (one of PACING_SETTINGS)."""
    section, key = name.split(".", 1)
    return float(getattr(getattr(cfg, section), key))


async def override(meta: MetadataStore, name: str) -> float | None:
    item = await meta.get(system_key(name))
    return None if item is None else float(msgpack.unpackb(item.value))


async def in_force(meta: MetadataStore, cfg: Config, name: str) -> float:
    o = await override(meta, name)
    return configured(cfg, name) if o is None else o


async def set_override(meta: MetadataStore, name: str, value: float | None) -> None:
    """Override `name` cluster-wide; None removes the override."""
    if name not in PACING_SETTINGS:
        raise ValueError(f"{name!r} is not a pacing setting")
    if value is None:
        await meta.delete(system_key(name))
        return
    if not 0 <= value <= MAX_BUSY_LAG_MS:  # also refuses NaN
        raise ValueError(f"{name} must be between 0 (fixed busy rate) and {MAX_BUSY_LAG_MS:g} ms, "
                         f"got {value:g}")
    await meta.put(system_key(name), msgpack.packb(float(value)))


__all__ = ["PACING_SETTINGS", "configured", "in_force", "override", "set_override"]
