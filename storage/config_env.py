"""The documented `TESSERA_*` environment overrides of config keys, and the variables that
tell the CLI where the cluster and its admin API are.

`storage.config.load_config` applies the overrides (`with_env_overrides`) and nowhere else
does; tests and benchmarks shorten timers with them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.config_sections import MiB
from storage.errors import ConfigError


@dataclass(frozen=True)
class EnvOverride:
    """A documented environment variable that overrides one config key (value x scale)."""

    name: str
    section: str
    key: str
    scale: float = 1.0
    doc: str = ""


ENV_OVERRIDES: tuple[EnvOverride, ...] = (
    EnvOverride("TESSERA_REPAIR_RATE_MBPS", "repair", "rate_bytes_s", MiB),
    EnvOverride("TESSERA_REPAIR_BUSY_RATE_MBPS", "repair", "busy_rate_bytes_s", MiB),
    EnvOverride("TESSERA_REPAIR_BUSY_LAG_MS", "repair", "busy_lag_ms"),
    EnvOverride("TESSERA_REPAIR_DOWN_GRACE_S", "repair", "down_grace_s"),
    EnvOverride("TESSERA_REPAIR_SWEEP_S", "repair", "sweep_interval_s"),
    EnvOverride("TESSERA_REPAIR_SWEEP_BATCH", "repair", "sweep_batch"),
    EnvOverride("TESSERA_REPAIR_SWEEP_RATE", "repair", "sweep_rate_stripes_s"),
    EnvOverride("TESSERA_REPAIR_PARALLEL", "repair", "parallel"),
    EnvOverride("TESSERA_ORPHAN_GRACE_S", "repair", "orphan_grace_s"),
    EnvOverride("TESSERA_REBALANCE_RATE_MBPS", "rebalance", "rate_bytes_s", MiB),
    EnvOverride("TESSERA_REBALANCE_BUSY_RATE_MBPS", "rebalance", "busy_rate_bytes_s", MiB),
    EnvOverride("TESSERA_REBALANCE_BUSY_LAG_MS", "rebalance", "busy_lag_ms"),
    EnvOverride("TESSERA_REBALANCE_PARALLEL", "rebalance", "parallel"),
    EnvOverride("TESSERA_REBALANCE_BATCH", "rebalance", "batch"),
    EnvOverride("TESSERA_REBALANCE_MAX_MOVES", "rebalance", "max_moves"),
    EnvOverride("TESSERA_REBALANCE_THRESHOLD", "rebalance", "threshold"),
    EnvOverride("TESSERA_REBALANCE_MIN_GAP_MB", "rebalance", "min_gap_bytes", MiB),
    EnvOverride("TESSERA_REBALANCE_INTERVAL_S", "rebalance", "interval_s"),
    EnvOverride("TESSERA_DEEP_SCRUB_RATE_MBPS", "gateway", "deep_scrub_rate_mbps"),
    EnvOverride("TESSERA_DEEP_SCRUB_PAUSE_S", "gateway", "deep_scrub_pause_s"),
    EnvOverride("TESSERA_METRICS_REFRESH_S", "gateway", "metrics_refresh_s"),
    EnvOverride("TESSERA_HEALTH_PROBE_S", "gateway", "health_probe_s"),
    EnvOverride("TESSERA_ACCEPT_GRACE_S", "gateway", "accept_grace_s"),
    EnvOverride("TESSERA_GATEWAY_WORKERS", "gateway", "workers"),
    EnvOverride("TESSERA_UPLOAD_BUDGET_MB", "gateway", "upload_budget_bytes", MiB),
    EnvOverride("TESSERA_CONSOLE_SESSION_IDLE_S", "gateway", "console_session_idle_s"),
    EnvOverride("TESSERA_SCRUB_RATE_MBPS", "scrub", "rate_bytes_s", MiB),
    EnvOverride("TESSERA_SCRUB_PAUSE_S", "scrub", "pause_s"),
    EnvOverride("TESSERA_PACKS_MAX_SHARD_BYTES", "packs", "max_shard_bytes"),
    EnvOverride("TESSERA_PACKS_RESERVE_BYTES", "packs", "reserve_bytes"),
    EnvOverride("TESSERA_GC_GRACE_S", "workers", "gc_grace_s"),
    EnvOverride("TESSERA_LEASE_TTL_S", "workers", "lease_ttl_s"),
    EnvOverride("TESSERA_ACCESS_LOG_FLUSH_S", "access_log", "flush_interval_s"),
    EnvOverride("TESSERA_ACCESS_LOG_STAGE_S", "access_log", "stage_interval_s"),
    EnvOverride("TESSERA_LOG_MAX_BYTES", "logging", "max_bytes"),
    EnvOverride("TESSERA_LOG_BACKUPS", "logging", "backups"),
)
# Not config keys: where the CLI finds the cluster and the admin API (written to tessera.env).
ENV_CONFIG = "TESSERA_CONFIG"
ENV_ADMIN_URL = "TESSERA_ADMIN_URL"
ENV_ADMIN_ACCESS_KEY = "TESSERA_ADMIN_ACCESS_KEY"
ENV_ADMIN_SECRET_KEY = "TESSERA_ADMIN_SECRET_KEY"
# Not a config key: the pids whose exit stops `tessera up` and the block daemon
# (storage/starterdeath.py; the test suite names its own).
ENV_EXIT_WITH_PID = "TESSERA_EXIT_WITH_PID"


def config_path(given: str | Path | None, env: Mapping[str, str] | None = None) -> Path:
    """The CLI's config file: `--config`, else $TESSERA_CONFIG; ConfigError when neither."""
    given = given or (os.environ if env is None else env).get(ENV_CONFIG)
    if not given:
        raise ConfigError(f"no cluster: set {ENV_CONFIG} (source tessera.env) or --config")
    return Path(given)


def with_env_overrides(raw: Mapping[str, Any],
                       env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`raw` (parsed TOML) with each set ENV_OVERRIDES variable written over its key."""
    env = os.environ if env is None else env
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for o in ENV_OVERRIDES:
        value = env.get(o.name)
        if value in (None, ""):
            continue
        try:
            number = float(value) * o.scale
        except ValueError:
            raise ConfigError(f"{o.name} must be a number, got {value!r}") from None
        out.setdefault(o.section, {})[o.key] = int(number) if number.is_integer() else number
    return out
