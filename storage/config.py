"""Cluster configuration: one TOML file parsed once into frozen, validated dataclasses.

Every durability rule that can be checked before a byte is written is checked here, so a
cluster that could lose data to a single zone outage never starts. The sections' dataclasses
are in `storage.config_sections`, the documented `TESSERA_*` environment overrides
(`ENV_OVERRIDES`, tests and benchmarks shorten timers with them) in `storage.config_env`;
both are re-exported here, and the overrides are applied by `load_config` and nowhere else.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from storage.config_env import (
    ENV_ADMIN_ACCESS_KEY,
    ENV_ADMIN_SECRET_KEY,
    ENV_ADMIN_URL,
    ENV_CONFIG,
    ENV_OVERRIDES,
    EnvOverride,
    config_path,
    with_env_overrides,
)
from storage.config_sections import (
    DEFAULT_BUSY_RATE,
    DEFAULT_INLINE_MAX_BYTES,
    DEFAULT_RATE,
    MAX_BUSY_LAG_MS,
    MAX_SKEW_S,
    NODE_ID,
    NODE_ROLES,
    AccessLogSettings,
    ArchiveSettings,
    AuditSettings,
    GatewayConfig,
    LifecycleSettings,
    LogSettings,
    MiB,
    NodeSpec,
    PackSettings,
    Profile,
    RebalanceSettings,
    RepairSettings,
    ScrubSettings,
    WorkerSettings,
)
from storage.errors import ConfigError
from storage.metadata.etcd_tls import EtcdClientTLS

# an [gateway] admin_hosts entry that can match a Host (gateway/admin/hosts.py): a name or
# IPv4 address, or a bracketed IPv6 one, with an optional port; "*.example.com" or a name
# with a space loaded and then matched nothing
_ADMIN_HOST = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")

# the sections and the environment overrides are defined apart and re-exported here, so
# `from storage.config import X` keeps working for every name
__all__ = [
    "DEFAULT_BUSY_RATE", "DEFAULT_INLINE_MAX_BYTES", "DEFAULT_RATE", "ENV_ADMIN_ACCESS_KEY",
    "ENV_ADMIN_SECRET_KEY", "ENV_ADMIN_URL", "ENV_CONFIG", "ENV_OVERRIDES", "NODE_ID",
    "NODE_ROLES", "SETTINGS_SECTIONS", "AccessLogSettings", "ArchiveSettings", "AuditSettings", "Config",
    "ConfigError", "EnvOverride", "GatewayConfig", "LifecycleSettings", "LogSettings", "MiB",
    "NodeSpec", "PackSettings", "Profile", "RebalanceSettings", "RepairSettings", "ScrubSettings",
    "WorkerSettings", "config_from_mapping", "config_path", "env_settings", "load_config",
    "validate_layout", "with_env_overrides",
]

HEAD_MIN_BYTES = 8 * 1024  # [gateway] max_header_bytes' floor: AWS's own cap on a head


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
    # the client certificate etcd members checking clients (mutual TLS) require
    etcd_tls: EtcdClientTLS | None = None
    storage_classes: Mapping[str, str] = field(default_factory=dict)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    node_request_window_s: int = 300
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES  # objects up to this size live sealed
    # in their manifest (0 = off)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    repair: RepairSettings = field(default_factory=RepairSettings)
    rebalance: RebalanceSettings = field(default_factory=RebalanceSettings)
    scrub: ScrubSettings = field(default_factory=ScrubSettings)
    packs: PackSettings = field(default_factory=PackSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    access_log: AccessLogSettings = field(default_factory=AccessLogSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

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
                                      "scrub": ScrubSettings, "packs": PackSettings,
                                      "workers": WorkerSettings,
                                      "lifecycle": LifecycleSettings,
                                      "access_log": AccessLogSettings,
                                      "audit": AuditSettings}
_TOP_KEYS = {"data_dir", "cluster", "gateway", "profiles", "nodes", "storage_classes", "metadata",
             "archive", *SETTINGS_SECTIONS}
_ARCHIVE_KEYS = set(ArchiveSettings.__dataclass_fields__)
_CLUSTER_KEYS = {"default_profile", "segment_size", "write_quorum_extra", "node_request_window_s",
                 "inline_max_bytes", "large_segment_size"}
_GATEWAY_KEYS = set(GatewayConfig.__dataclass_fields__)
_PROFILE_KEYS = {"k", "m", "role", "compress"}
_NODE_KEYS = {"id", "zone", "address", "role", "weight"}
ETCD_TLS_KEYS = ("etcd_ca_file", "etcd_cert_file", "etcd_key_file")
_META_KEYS = {"backend", "path", "etcd_endpoints", *ETCD_TLS_KEYS}


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
             "backups": 1, "refused_max_bytes": 4096, "refused_backups": 1, "max_buffered": 1, "flush_interval_s": 0.1,
             "stage_interval_s": 0.05}  # keys whose floor is above 0
_AT_MOST = {"busy_lag_ms": MAX_BUSY_LAG_MS}  # keys with a ceiling


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
        most = _AT_MOST.get(f.name, math.inf)
        ok = not isinstance(v, bool) and isinstance(v, int if whole else int | float)
        if ok and not whole:
            try:
                v = float(v)  # an integer past a double's range overflows: refused below
            except OverflowError:
                ok = False
        if not ok or (not whole and not math.isfinite(v)) or not least <= v <= most:
            kind = "a whole number" if whole else "a number"
            upto = f" and <= {most:g}" if most < math.inf else ""
            raise ConfigError(f"[{section}] {f.name} must be {kind} >= {least}{upto}, "
                              f"got {raw[f.name]!r}")
        vals[f.name] = v
    return cls(**vals)


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
    budget = gw.get("upload_budget_bytes", MiB)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < MiB:
        raise ConfigError("[gateway] upload_budget_bytes must be a whole number >= 1048576 "
                          f"(1 MiB), got {budget!r}")
    head = gw.get("max_header_bytes", GatewayConfig.max_header_bytes)  # below AWS's 8 KiB,
    # ordinary requests of every SDK would be refused
    if isinstance(head, bool) or not isinstance(head, int) or head < HEAD_MIN_BYTES:
        raise ConfigError(f"[gateway] max_header_bytes must be a whole number >= "
                          f"{HEAD_MIN_BYTES} (AWS's 8 KiB), got {head!r}")
    skew = gw.get("max_skew_s", GatewayConfig.max_skew_s)  # a signed admin change's claim
    # is kept for 2 x the ceiling (gateway.admin.once), whatever each gateway's own value
    if isinstance(skew, bool) or not isinstance(skew, int) or not 1 <= skew <= MAX_SKEW_S:
        raise ConfigError(f"[gateway] max_skew_s must be a whole number of seconds from 1 "
                          f"to {MAX_SKEW_S}, got {skew!r}")
    hosts = gw.get("admin_hosts", [])
    if not isinstance(hosts, list | tuple) or not all(
            isinstance(h, str) and (h == "*" or _ADMIN_HOST.fullmatch(h)) for h in hosts):
        raise ConfigError("[gateway] admin_hosts must be a list of host names, each one exact "
                          "(letters, digits, '-', '.', '_', an optional :port; no wildcard "
                          'but a lone "*", which answers any Host), e.g. '
                          f'["admin.example.com"], got {hosts!r}')
    gw["admin_hosts"] = tuple(hosts)
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
        etcd_tls=_etcd_tls(meta, dd),
        storage_classes=classes,
        gateway=GatewayConfig(**gw),
        archive=_archive(dict(raw.get("archive", {}))),
        **{name: _settings(name, cls, dict(raw.get(name, {})))
           for name, cls in SETTINGS_SECTIONS.items()},
    )


def _etcd_tls(meta: dict[str, Any], data_dir: Path) -> EtcdClientTLS | None:
    """[metadata] etcd_ca_file, etcd_cert_file, etcd_key_file: all three or none (relative
    to data_dir)."""
    given = [k for k in ETCD_TLS_KEYS if k in meta]
    if not given:
        return None
    if len(given) != len(ETCD_TLS_KEYS) or not all(
            isinstance(meta[k], str) and meta[k] for k in ETCD_TLS_KEYS):
        raise ConfigError("[metadata] etcd_ca_file, etcd_cert_file and etcd_key_file go "
                          "together: each a PEM file path")
    if not all(str(e).startswith("https://") for e in meta.get("etcd_endpoints", ())):
        raise ConfigError("[metadata] etcd client certificate given: every etcd_endpoints "
                          "URL must be https://")
    return EtcdClientTLS(*(data_dir / meta[k] for k in ETCD_TLS_KEYS))


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
