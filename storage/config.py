"""Cluster configuration: one TOML file parsed once into frozen, validated dataclasses.

Every durability rule that can be checked before a byte is written is checked here, so a
cluster that could lose data to a single zone outage never starts. Every knob lives here: the
documented `TESSERA_*` environment overrides (`ENV_OVERRIDES`, tests and benchmarks shorten
timers with them) are applied by `load_config` and nowhere else.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from storage.errors import ConfigError

MiB = 1024 * 1024
# Objects up to this size are sealed inside their manifest instead of k+m shard files: about
# 5x less server CPU per small PUT/GET (benchmarks/inline_size.py), durability exactly the
# metadata store's, which already bounds every object. 4 KiB keeps listing pages and etcd's
# value quota small (every inline byte is read by each listing scan of its record).
DEFAULT_INLINE_MAX_BYTES = 4096
NODE_ROLES = ("standard", "archive")
# a node id: 1-63 letters, digits, '.', '_' or '-' (it names files, metric labels and a
# 64-byte slot of the gateway workers' shared health page)
NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_RATE = 200 * MiB  # shard bytes repair/rebalance write per second while clients are idle
DEFAULT_BUSY_RATE = 4 * MiB  # ...and while clients are active


@dataclass(frozen=True)
class Profile:
    """An erasure profile: k data + m parity shards placed on nodes of one role."""

    name: str
    k: int
    m: int
    role: str = "standard"
    compress: bool = False

    @property
    def width(self) -> int:
        return self.k + self.m


@dataclass(frozen=True)
class NodeSpec:
    """A storage node as the cluster map knows it."""

    id: str
    zone: str
    address: str  # host:port
    role: str = "standard"
    weight: float = 1.0

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:9000"
    admin_listen: str = "127.0.0.1:9001"
    region: str = "us-east-1"
    virtual_host_domain: str | None = None
    max_skew_s: int = 900
    max_object_size: int = 5 * 1024**4
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 20.0  # a connection must send its first request's headers
    shred_wait_s: float = 0.0  # default waiting period before a tenant shred destroys keys
    cpu_threads: int = 2
    workers: int = 0  # gateway processes serving S3 on one address; 0 = one per core
    accept_grace_s: float = 0.25  # a pending connection waits this for the worker whose turn
    deep_scrub_rate_mbps: float = 4.0  # shard bytes the deep scrub reads per second (0 = off)
    deep_scrub_pause_s: float = 3600.0  # rest between two full deep scrub passes
    metrics_refresh_s: float = 10.0  # how often /metrics' cluster gauges are recomputed
    health_probe_s: float = 1.0  # how often node health is probed (down nodes 4x as often)
    console_session_idle_s: float = 1800.0  # a console session ends after this long unused
    console_session_max_s: float = 43200.0  # ...and this long after its login in any case


@dataclass(frozen=True)
class ArchiveSettings:
    """The archive tier's clock: how long a lifecycle/restore "day" is, and restore latencies.

    Latencies are given in real-world seconds (AWS's typical figures) and scaled by
    `day_seconds / 86400`, so a test cluster with 10-second days restores in seconds.
    """

    day_seconds: float = 86400.0
    lifecycle_interval_s: float = 3600.0
    expedited_s: float = 300.0
    standard_s: float = 4 * 3600.0
    bulk_s: float = 12 * 3600.0
    deep_standard_s: float = 12 * 3600.0
    deep_bulk_s: float = 48 * 3600.0

    @property
    def scale(self) -> float:
        return self.day_seconds / 86400.0


@dataclass(frozen=True)
class LifecycleSettings:
    """[lifecycle]: bucket lifecycle rules' clock (see storage/lifecycle_clock.py)."""

    day_seconds: float = 0.0  # length of a lifecycle "day"; 0 = [archive] day_seconds

    def __post_init__(self) -> None:
        if self.day_seconds and not 0.1 <= self.day_seconds <= 86400:
            raise ConfigError("[lifecycle] day_seconds must be 0 (the [archive] day) or between "
                              f"0.1 and 86400 s (a real day), got {self.day_seconds:g}")


@dataclass(frozen=True)
class RepairSettings:
    """[repair]: the repair worker (rebuilds lost shards, removes orphans)."""

    rate_bytes_s: float = DEFAULT_RATE  # rebuilt bytes written per second, 0 = unlimited
    busy_rate_bytes_s: float = DEFAULT_BUSY_RATE  # ...while clients are active, 0 = as idle
    down_grace_s: float = 300.0  # a down node's shards are rebuilt after this long
    sweep_interval_s: float = 60.0  # pause between two full sweeps
    sweep_batch: int = 128  # stripes checked per sweep step
    orphan_grace_s: float = 3600.0  # unreferenced shards younger than this are kept
    # stripes rebuilt at once: 16, not 8 (benchmarks/README, issue 17 session 5: faster and
    # less CPU per rebuilt MiB, client PUTs during repair no slower)
    parallel: int = 16


@dataclass(frozen=True)
class RebalanceSettings:
    """[rebalance]: the rebalancer (drains nodes, evens usage)."""

    rate_bytes_s: float = DEFAULT_RATE  # moved bytes per second, 0 = unlimited
    busy_rate_bytes_s: float = DEFAULT_BUSY_RATE  # ...while clients are active, 0 = as idle
    parallel: int = 8  # stripes moved at once
    batch: int = 256  # stripes examined per step
    max_moves: int = 256  # balance moves per pass (draining is not bounded)
    threshold: float = 0.10  # a node below mean * (1 - threshold) receives shards...
    min_gap_bytes: float = 1024 * MiB  # ...and at least this far below the mean
    interval_s: float = 10.0  # pause between two passes when there is nothing to drain


@dataclass(frozen=True)
class ScrubSettings:
    """[scrub]: each node's checksum scrub (0 bytes/s = off)."""

    rate_bytes_s: float = 8 * MiB
    pause_s: float = 3600.0  # rest between two full passes


@dataclass(frozen=True)
class WorkerSettings:
    """[workers]: what all gateways' background workers share."""

    gc_grace_s: float = 60.0  # a replaced/aborted version's stripes wait this long (reads)
    lease_ttl_s: float = 10.0  # a dead gateway's workers move to another after this long


@dataclass(frozen=True)
class AccessLogSettings:
    """[access_log]: S3 server access logs (PutBucketLogging) and their delivery."""

    flush_interval_s: float = 60.0  # a source bucket's records wait at most this long
    stage_interval_s: float = 1.0  # records buffered in a gateway's memory at most this long
    max_buffered: int = 100000  # records a gateway holds in memory; more are dropped (counted)


@dataclass(frozen=True)
class LogSettings:
    """Log rotation. Environment only: a process logs before it reads its config."""

    max_bytes: int = 64 * MiB
    backups: int = 3


@dataclass(frozen=True)
class Config:
    """Everything a process of the cluster needs to know about the cluster."""

    data_dir: Path
    nodes: tuple[NodeSpec, ...]
    profiles: Mapping[str, Profile]
    default_profile: str = "standard"
    segment_size: int = 1 * MiB
    large_segment_size: int = 4 * MiB  # parts of at least twice this; 0 = segment_size always
    write_quorum_extra: int = 1
    metadata_backend: str = "sqlite"
    metadata_path: str = "meta/tessera.db"
    etcd_endpoints: tuple[str, ...] = ()
    storage_classes: Mapping[str, str] = field(default_factory=dict)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    node_request_window_s: int = 300
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES  # objects up to this size live sealed
    # in their manifest (0 = off)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    repair: RepairSettings = field(default_factory=RepairSettings)
    rebalance: RebalanceSettings = field(default_factory=RebalanceSettings)
    scrub: ScrubSettings = field(default_factory=ScrubSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    access_log: AccessLogSettings = field(default_factory=AccessLogSettings)

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(sorted({n.zone for n in self.nodes}))

    def profile(self, name: str | None = None) -> Profile:
        return self.profiles[name or self.default_profile]

    def profile_for_class(self, storage_class: str) -> Profile:
        return self.profile(self.storage_classes.get(storage_class, self.default_profile))

    def segment_for(self, size_hint: int | None) -> int:
        """The segment size of a new part of `size_hint` bytes: `large_segment_size` for
        parts of at least two of them (fewer frames, tags and round trips per byte),
        else `segment_size`."""
        large = self.large_segment_size
        if large and size_hint is not None and size_hint >= 2 * large:
            return large
        return self.segment_size

    def write_quorum(self, profile: Profile) -> int:
        """Shards that must be fsynced before a write is acknowledged."""
        return min(profile.k + self.write_quorum_extra, profile.width)

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "secrets" / "cluster.key"

    @property
    def root_key_path(self) -> Path:
        return self.data_dir / "secrets" / "root.key"


# [section] -> the dataclass of its numeric knobs (each field a key, each value >= 0).
SETTINGS_SECTIONS: dict[str, type] = {"repair": RepairSettings, "rebalance": RebalanceSettings,
                                      "scrub": ScrubSettings, "workers": WorkerSettings,
                                      "lifecycle": LifecycleSettings,
                                      "access_log": AccessLogSettings}
_TOP_KEYS = {"data_dir", "cluster", "gateway", "profiles", "nodes", "storage_classes", "metadata",
             "archive", *SETTINGS_SECTIONS}
_ARCHIVE_KEYS = set(ArchiveSettings.__dataclass_fields__)
_CLUSTER_KEYS = {"default_profile", "segment_size", "write_quorum_extra", "node_request_window_s",
                 "inline_max_bytes", "large_segment_size"}
_GATEWAY_KEYS = set(GatewayConfig.__dataclass_fields__)
_PROFILE_KEYS = {"k", "m", "role", "compress"}
_NODE_KEYS = {"id", "zone", "address", "role", "weight"}
_META_KEYS = {"backend", "path", "etcd_endpoints"}


def _check_keys(section: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in [{section}]; allowed: {sorted(allowed)}")


def _int(where: str, value: Any) -> int:
    """An integer setting; anything else (strings, floats, lists) is a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    return value


def _profile(name: str, raw: Mapping[str, Any]) -> Profile:
    _check_keys(f"profiles.{name}", raw, _PROFILE_KEYS)
    try:
        p = Profile(name=name, k=_int(f"profile {name!r}: k", raw["k"]),
                    m=_int(f"profile {name!r}: m", raw["m"]),
                    role=str(raw.get("role", "standard")), compress=bool(raw.get("compress", False)))
    except KeyError as exc:
        raise ConfigError(f"profile {name!r} needs {exc.args[0]!r}") from None
    if p.k < 1 or p.m < 1 or p.width > 256:
        raise ConfigError(f"profile {name!r}: need k >= 1, m >= 1 and k + m <= 256")
    if p.role not in NODE_ROLES:
        raise ConfigError(f"profile {name!r}: role must be one of {NODE_ROLES}")
    return p


def validate_layout(profile: Profile, nodes: tuple[NodeSpec, ...]) -> None:
    """Refuse a profile the nodes of its role cannot hold with at most m shards per zone."""
    eligible = [n for n in nodes if n.role == profile.role]
    if profile.width > len(eligible):
        raise ConfigError(
            f"profile {profile.name!r} ({profile.k}+{profile.m}) needs {profile.width} "
            f"{profile.role} nodes, the cluster has {len(eligible)}"
        )
    per_zone: dict[str, int] = {}
    for n in eligible:
        per_zone[n.zone] = per_zone.get(n.zone, 0) + 1
    capacity = sum(min(profile.m, c) for c in per_zone.values())
    if capacity < profile.width:
        raise ConfigError(
            f"profile {profile.name!r} ({profile.k}+{profile.m}) cannot survive the loss of a "
            f"zone: with at most m={profile.m} shards per zone, {len(per_zone)} zone(s) of "
            f"{profile.role} nodes hold only {capacity} of {profile.width} shards"
        )


def _archive(raw: Mapping[str, Any]) -> ArchiveSettings:
    _check_keys("archive", raw, _ARCHIVE_KEYS)
    vals: dict[str, float] = {}
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ConfigError(f"[archive] {k} must be a positive number, got {v!r}")
        vals[k] = float(v)
    return ArchiveSettings(**vals)


_AT_LEAST = {"parallel": 1, "batch": 1, "sweep_batch": 1, "lease_ttl_s": 1, "max_bytes": 4096,
             "backups": 1, "max_buffered": 1, "flush_interval_s": 0.1,
             "stage_interval_s": 0.05}  # keys whose floor is above 0


def _settings(section: str, cls: type, raw: Mapping[str, Any]) -> Any:
    """A settings dataclass from its TOML table: known keys, numbers >= 0 (or the key's
    _AT_LEAST floor), whole numbers where the field is an int."""
    _check_keys(section, raw, {f.name for f in fields(cls)})
    vals: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        v = raw[f.name]
        whole = f.type in ("int", int)
        least = _AT_LEAST.get(f.name, 0)
        if isinstance(v, bool) or not isinstance(v, int if whole else int | float) or v < least:
            kind = "a whole number" if whole else "a number"
            raise ConfigError(f"[{section}] {f.name} must be {kind} >= {least}, got {v!r}")
        vals[f.name] = v if whole else float(v)
    return cls(**vals)


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
    EnvOverride("TESSERA_REPAIR_DOWN_GRACE_S", "repair", "down_grace_s"),
    EnvOverride("TESSERA_REPAIR_SWEEP_S", "repair", "sweep_interval_s"),
    EnvOverride("TESSERA_REPAIR_SWEEP_BATCH", "repair", "sweep_batch"),
    EnvOverride("TESSERA_REPAIR_PARALLEL", "repair", "parallel"),
    EnvOverride("TESSERA_ORPHAN_GRACE_S", "repair", "orphan_grace_s"),
    EnvOverride("TESSERA_REBALANCE_RATE_MBPS", "rebalance", "rate_bytes_s", MiB),
    EnvOverride("TESSERA_REBALANCE_BUSY_RATE_MBPS", "rebalance", "busy_rate_bytes_s", MiB),
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
    EnvOverride("TESSERA_CONSOLE_SESSION_IDLE_S", "gateway", "console_session_idle_s"),
    EnvOverride("TESSERA_SCRUB_RATE_MBPS", "scrub", "rate_bytes_s", MiB),
    EnvOverride("TESSERA_SCRUB_PAUSE_S", "scrub", "pause_s"),
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


def env_settings(section: str, env: Mapping[str, str] | None = None) -> Any:
    """A section's settings from its defaults and the environment alone (no config file:
    a node started without --config, log rotation set up before the config is read)."""
    cls = LogSettings if section == "logging" else SETTINGS_SECTIONS[section]
    return _settings(section, cls, with_env_overrides({}, env).get(section, {}))


def config_from_mapping(raw: Mapping[str, Any], data_dir: Path | None = None) -> Config:
    """Build and validate a Config from parsed TOML (tests call this directly)."""
    _check_keys("top level", raw, _TOP_KEYS)
    cluster = dict(raw.get("cluster", {}))
    _check_keys("cluster", cluster, _CLUSTER_KEYS)
    gw = dict(raw.get("gateway", {}))
    _check_keys("gateway", gw, _GATEWAY_KEYS)
    probe = gw.get("health_probe_s", 1.0)
    if isinstance(probe, bool) or not isinstance(probe, int | float) or probe < 0.05:
        raise ConfigError(f"[gateway] health_probe_s must be a number >= 0.05, got {probe!r}")
    grace = gw.get("accept_grace_s", 0.25)  # 0 would turn the workers' turns off unsaid
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0.01:
        raise ConfigError(f"[gateway] accept_grace_s must be a number >= 0.01, got {grace!r}")
    meta = dict(raw.get("metadata", {}))
    _check_keys("metadata", meta, _META_KEYS)
    profiles = {name: _profile(name, p) for name, p in dict(raw.get("profiles", {})).items()}
    if not profiles:
        raise ConfigError("no [profiles.*] section: define at least one erasure profile")
    nodes_raw = list(raw.get("nodes", []))
    nodes: list[NodeSpec] = []
    for i, n in enumerate(nodes_raw):
        _check_keys(f"nodes[{i}]", n, _NODE_KEYS)
        try:
            spec = NodeSpec(id=str(n["id"]), zone=str(n["zone"]), address=str(n["address"]),
                            role=str(n.get("role", "standard")), weight=float(n.get("weight", 1.0)))
        except KeyError as exc:
            raise ConfigError(f"nodes[{i}] needs {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise ConfigError(f"nodes[{i}]: weight must be a number") from None
        if not NODE_ID.match(spec.id):
            raise ConfigError(f"nodes[{i}]: id {spec.id!r} must be 1-63 letters, digits, "
                              "'.', '_' or '-', starting with a letter or digit")
        if spec.role not in NODE_ROLES:
            raise ConfigError(f"node {spec.id!r}: role must be one of {NODE_ROLES}")
        nodes.append(spec)
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ConfigError("node ids must be unique")
    default = str(cluster.get("default_profile", "standard"))
    if default not in profiles:
        raise ConfigError(f"default_profile {default!r} is not a defined profile")
    classes = {str(k): str(v) for k, v in dict(raw.get("storage_classes", {})).items()}
    for cls, pname in classes.items():
        if pname not in profiles:
            raise ConfigError(f"storage class {cls!r} names unknown profile {pname!r}")
    used = {default, *classes.values()}
    for pname in sorted(used):
        validate_layout(profiles[pname], tuple(nodes))
    segment = _int("segment_size", cluster.get("segment_size", 1 * MiB))
    if not (64 * 1024 <= segment <= 4 * MiB):
        raise ConfigError("segment_size must be between 64 KiB and 4 MiB")
    large = _int("large_segment_size", cluster.get("large_segment_size", 4 * MiB))
    if large and not segment <= large <= 4 * MiB:
        raise ConfigError("large_segment_size must be 0 (off) or between segment_size and 4 MiB")
    extra = _int("write_quorum_extra", cluster.get("write_quorum_extra", 1))
    if extra < 0:
        raise ConfigError("write_quorum_extra must be >= 0 (a write needs at least k shards)")
    inline = _int("inline_max_bytes", cluster.get("inline_max_bytes", DEFAULT_INLINE_MAX_BYTES))
    if not 0 <= inline <= 64 * 1024:
        raise ConfigError("inline_max_bytes must be between 0 (off) and 65536")
    backend = str(meta.get("backend", "sqlite"))
    if backend not in ("sqlite", "etcd"):
        raise ConfigError("metadata backend must be 'sqlite' or 'etcd'")
    dd = Path(raw.get("data_dir", data_dir or ".")).resolve()
    return Config(
        data_dir=dd,
        nodes=tuple(nodes),
        profiles=profiles,
        default_profile=default,
        segment_size=segment,
        large_segment_size=large,
        write_quorum_extra=extra,
        inline_max_bytes=inline,
        node_request_window_s=_int("node_request_window_s",
                                   cluster.get("node_request_window_s", 300)),
        metadata_backend=backend,
        metadata_path=str(meta.get("path", "meta/tessera.db")),
        etcd_endpoints=tuple(meta.get("etcd_endpoints", ())),
        storage_classes=classes,
        gateway=GatewayConfig(**gw),
        archive=_archive(dict(raw.get("archive", {}))),
        **{name: _settings(name, cls, dict(raw.get(name, {})))
           for name, cls in SETTINGS_SECTIONS.items()},
    )


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; relative data_dir is relative to the file.
    Set ENV_OVERRIDES variables (from `env`, default the process's) replace their keys."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if "data_dir" in raw and not Path(raw["data_dir"]).is_absolute():
        raw["data_dir"] = str(path.parent / raw["data_dir"])
    raw = with_env_overrides(raw, env)
    raw.pop("logging", None)  # read by env_settings("logging") alone
    return config_from_mapping(raw, data_dir=path.parent)
