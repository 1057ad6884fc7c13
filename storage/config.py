"""Cluster configuration: one TOML file parsed once into frozen, validated dataclasses.

Every durability rule that can be checked before a byte is written is checked here, so a
cluster that could lose data to a single zone outage never starts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    deep_scrub_rate_mbps: float = 4.0  # shard bytes the deep scrub reads per second (0 = off)
    deep_scrub_pause_s: float = 3600.0  # rest between two full deep scrub passes


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
class Config:
    """Everything a process of the cluster needs to know about the cluster."""

    data_dir: Path
    nodes: tuple[NodeSpec, ...]
    profiles: Mapping[str, Profile]
    default_profile: str = "standard"
    segment_size: int = 1 * MiB
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

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(sorted({n.zone for n in self.nodes}))

    def profile(self, name: str | None = None) -> Profile:
        return self.profiles[name or self.default_profile]

    def profile_for_class(self, storage_class: str) -> Profile:
        return self.profile(self.storage_classes.get(storage_class, self.default_profile))

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


_TOP_KEYS = {"data_dir", "cluster", "gateway", "profiles", "nodes", "storage_classes", "metadata",
             "archive"}
_ARCHIVE_KEYS = set(ArchiveSettings.__dataclass_fields__)
_CLUSTER_KEYS = {"default_profile", "segment_size", "write_quorum_extra", "node_request_window_s",
                 "inline_max_bytes"}
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


def config_from_mapping(raw: Mapping[str, Any], data_dir: Path | None = None) -> Config:
    """Build and validate a Config from parsed TOML (tests call this directly)."""
    _check_keys("top level", raw, _TOP_KEYS)
    cluster = dict(raw.get("cluster", {}))
    _check_keys("cluster", cluster, _CLUSTER_KEYS)
    gw = dict(raw.get("gateway", {}))
    _check_keys("gateway", gw, _GATEWAY_KEYS)
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
    )


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file; relative data_dir is relative to the file."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if "data_dir" in raw and not Path(raw["data_dir"]).is_absolute():
        raw["data_dir"] = str(path.parent / raw["data_dir"])
    return config_from_mapping(raw, data_dir=path.parent)
