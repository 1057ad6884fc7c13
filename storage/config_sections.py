"""The sections of the cluster configuration as frozen dataclasses: storage profiles, nodes,
the gateway, and the numeric knobs of each background section ([repair], [scrub], ...).

`storage.config` parses the TOML into these and re-exports them; parsing and validation
rules that span sections live there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
DEFAULT_BUSY_RATE = 4 * MiB  # ...and while clients are active (the floor of...)
DEFAULT_BUSY_LAG_MS = 25.0  # ...a rate that grows while the event loop lags less than this
MAX_BUSY_LAG_MS = 10_000.0  # the largest bound accepted (tessera.toml, env, `config set`)


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


MAX_SKEW_S = 3600  # [gateway] max_skew_s' ceiling: every gateway's window fits in it


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:9000"
    admin_listen: str = "127.0.0.1:9001"
    # names (beside IP literals and localhost) the admin listener answers to in Host:
    # gateway/admin/hosts.py, against DNS rebinding; "*" answers any
    admin_hosts: tuple[str, ...] = ()
    region: str = "us-east-1"
    virtual_host_domain: str | None = None
    max_skew_s: int = 900  # at most MAX_SKEW_S (gateway.admin.once keeps claims for it)
    max_object_size: int = 5 * 1024**3  # one PutObject or POST upload (AWS: 5 GiB)
    max_header_bytes: int = 16 * 1024  # one request head: request line and header lines
    header_timeout_s: float = 20.0  # each request's headers must be complete within this
    shred_wait_s: float = 0.0  # default waiting period before a tenant shred destroys keys
    cpu_threads: int = 2
    # segments and frames all uploads of the gateway (all its workers, each an equal share,
    # at least one largest upload) may hold at once; an upload waits its turn (before its
    # body is read) when its footprint does not fit its worker's share
    upload_budget_bytes: int = 256 * MiB
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
    # how long a deleted version's place is kept for ListObjectVersions markers (real seconds;
    # storage/version_places.py)
    version_place_retention_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.version_place_retention_s < 0:
            raise ConfigError("[lifecycle] version_place_retention_s must be >= 0, got "
                              f"{self.version_place_retention_s:g}")
        if self.day_seconds and not 0.1 <= self.day_seconds <= 86400:
            raise ConfigError("[lifecycle] day_seconds must be 0 (the [archive] day) or between "
                              f"0.1 and 86400 s (a real day), got {self.day_seconds:g}")


@dataclass(frozen=True)
class RepairSettings:
    """[repair]: the repair worker (rebuilds lost shards, removes orphans)."""

    rate_bytes_s: float = DEFAULT_RATE  # rebuilt bytes written per second, 0 = unlimited
    busy_rate_bytes_s: float = DEFAULT_BUSY_RATE  # ...while clients are active, 0 = as idle
    busy_lag_ms: float = DEFAULT_BUSY_LAG_MS  # busy rate grows while loop lag stays below
    down_grace_s: float = 300.0  # a down node's shards are rebuilt after this long
    sweep_interval_s: float = 60.0  # pause between two full sweeps
    sweep_batch: int = 128  # stripes checked per sweep step
    # stripes the sweep checks per second on average while every node is up (0 = unlimited),
    # with a burst of a minute's worth: its idle cost stays flat however many objects
    sweep_rate_stripes_s: float = 100.0
    orphan_grace_s: float = 86400.0  # unreferenced shards younger than this are kept (a write
    # older than this less 10% is not committed: storage/write_age.py)
    # stripes rebuilt at once: 16, not 8 (benchmarks/README, issue 17 session 5: faster and
    # less CPU per rebuilt MiB, client PUTs during repair no slower)
    parallel: int = 16


@dataclass(frozen=True)
class RebalanceSettings:
    """[rebalance]: the rebalancer (drains nodes, evens usage)."""

    rate_bytes_s: float = DEFAULT_RATE  # moved bytes per second, 0 = unlimited
    busy_rate_bytes_s: float = DEFAULT_BUSY_RATE  # ...while clients are active, 0 = as idle
    busy_lag_ms: float = DEFAULT_BUSY_LAG_MS  # busy rate grows while loop lag stays below
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
class PackSettings:
    """[packs]: whole shards appended to each node's pack files instead of a file each
    (issue 17, `nodes.packstore`; on by default since session 19, 0 bytes = off)."""

    max_shard_bytes: int = MiB  # whole shards up to this size are packed; 0 = every shard a file
    seal_bytes: int = 256 * MiB  # a pack takes no more appends once this large
    compact_ratio: float = 0.5  # a sealed pack with less of it live is copied forward
    compact_interval_s: float = 60.0  # how often a node looks for packs to compact
    compact_rate_bytes_s: int = 16 * MiB  # live bytes a node's compaction copies per second
    # space each disk keeps back so a full disk can still delete and compact
    # (`nodes.packreserve`); -1 = seal_bytes: a compaction candidate's records always fit
    reserve_bytes: int = -1

    def __post_init__(self) -> None:
        if not 0.0 <= self.compact_ratio < 1.0:  # a pack's size counts its footer: at 1.0
            # a fully live pack is below the ratio and copied forward at every interval
            raise ConfigError(f"[packs] compact_ratio must be at least 0 and below 1 "
                              f"(got {self.compact_ratio})")
        if self.compact_interval_s <= 0 or self.compact_rate_bytes_s <= 0 \
                or self.seal_bytes <= 0:
            raise ConfigError("[packs] compact_interval_s, compact_rate_bytes_s and "
                              "seal_bytes must be above 0")
        if self.reserve_bytes < -1:
            raise ConfigError("[packs] reserve_bytes must be 0 or more (-1: seal_bytes)")

    def reserve(self) -> int:
        """The bytes each disk's pack reserve holds (`reserve_bytes`, -1 meaning a whole
        pack: the most one compaction candidate's live records and tombstones can be)."""
        return self.seal_bytes if self.reserve_bytes < 0 else self.reserve_bytes


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
class AuditSettings:
    """[audit]: the admin audit log's rotation (gateway/admin/audit.py)."""

    max_bytes: int = 64 * MiB  # audit.log is renamed audit.log.1 before it would pass this
    backups: int = 8  # rotated files kept (audit.log.1 the newest); older ones are deleted
    refused_max_bytes: int = 16 * MiB  # audit-refused.log (refused requests) rotates past this
    refused_backups: int = 2  # rotated audit-refused.log files kept


@dataclass(frozen=True)
class LogSettings:
    """Log rotation. Environment only: a process logs before it reads its config."""

    max_bytes: int = 64 * MiB
    backups: int = 3
