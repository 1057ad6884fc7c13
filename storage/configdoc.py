"""docs/CONFIG.md, generated: every `tessera.toml` key and environment variable with its default.

Keys, defaults and environment overrides come from storage/config.py (the dataclasses and
ENV_OVERRIDES); only the one-line explanations live here. A test regenerates the file
and fails when the committed one differs, or when a config key has no explanation, so the
document cannot drift. Regenerate with:

    python -m storage.configdoc > docs/CONFIG.md
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage import config as c
from storage.config_env import ENV_EXIT_WITH_PID


# (section, key) -> (dataclass, field name): where each TOML key's default lives.
def _keys(section: str, cls: type, allowed: set[str]) -> dict[tuple[str, str], tuple[type, str]]:
    """The section's keys in the dataclass's field order (keys without a field last)."""
    order = [f.name for f in dataclasses.fields(cls) if f.name in allowed]
    order += sorted(allowed - set(order))
    return {(section, k): (cls, k) for k in order}


TOML_SOURCES: dict[tuple[str, str], tuple[type, str]] = {
    ("", "data_dir"): (c.Config, "data_dir"),
    **_keys("cluster", c.Config, c._CLUSTER_KEYS),
    **_keys("gateway", c.GatewayConfig, c._GATEWAY_KEYS),
    ("metadata", "backend"): (c.Config, "metadata_backend"),
    ("metadata", "path"): (c.Config, "metadata_path"),
    ("metadata", "etcd_endpoints"): (c.Config, "etcd_endpoints"),
    **{("metadata", k): (c.Config, "etcd_tls") for k in c.ETCD_TLS_KEYS},
    **_keys("profiles.NAME", c.Profile, c._PROFILE_KEYS),
    **_keys("[nodes]", c.NodeSpec, c._NODE_KEYS),
    **_keys("archive", c.ArchiveSettings, c._ARCHIVE_KEYS),
    **{k: v for name, cls in c.SETTINGS_SECTIONS.items()
       for k, v in _keys(name, cls, {f.name for f in dataclasses.fields(cls)}).items()},
}

TOML_DOCS: dict[tuple[str, str], str] = {
    ("", "data_dir"): "Directory of everything a process keeps (metadata file, node shards, "
    "secrets, logs); a relative path is relative to the config file.",
    ("cluster", "default_profile"): "Erasure profile of objects whose storage class names "
    "none.",
    ("cluster", "segment_size"): "Plaintext bytes per sealed segment (64 KiB to 4 MiB). "
    "Larger segments cost fewer per-segment tags, checksums and round trips; smaller ones make "
    "ranged reads and degraded reads fetch less.",
    ("cluster", "large_segment_size"): "Segment size of parts (and single-PUT objects) whose "
    "announced size is at least twice it (segment_size to 4 MiB; 0 = segment_size for every "
    "part): a 64 MiB object is coded in 16 segments instead of 64, a quarter of the frames, "
    "tags and checksums on the gateway and the nodes.",
    ("cluster", "write_quorum_extra"): "Shards beyond k that must be fsynced before a PUT is "
    "acknowledged when fewer than k+m nodes can take one (otherwise a failed target's shard "
    "goes to a spare first, and all k+m are). 0 acknowledges with no spare redundancy then; "
    "m refuses (503) every write that cannot place all k+m shards.",
    ("cluster", "node_request_window_s"): "How old a signed gateway-to-node request may be. "
    "Shorter narrows replay; too short fails on clock skew between hosts.",
    ("cluster", "inline_max_bytes"): "Objects up to this many bytes are sealed (AES-GCM, as "
    "any segment) inside their metadata record instead of k+m shards: one metadata "
    "write instead of k+m fsynced shard writes, several times less CPU per small object. Their "
    "durability is the metadata store's, which is already the floor of every object (a lost "
    "manifest is a lost object). 0 turns it off; at most 65536 (metadata records stay small).",
    ("gateway", "listen"): "S3 API address (HOST:PORT).",
    ("gateway", "admin_listen"): "Admin API address (HOST:PORT); keep it reachable by operators "
    "only.",
    ("gateway", "admin_hosts"): "Host names the admin listener (admin API, console, "
    "/metrics, /health) answers to, beside IP literals, localhost, *.localhost and "
    "admin_listen's own host; any other Host is refused 421 HostNotAllowed, so a web page "
    "that rebinds its DNS name to this address cannot read it. Add the names operators, "
    "scrapers or a TLS proxy forwarding the original Host use; [\"*\"] answers any Host. "
    "Each entry is an exact name or address (an optional :port is ignored): there are no "
    "wildcards such as *.example.com, and such an entry is refused at startup.",
    ("gateway", "region"): "Region the gateway answers as and that SigV4 credentials must "
    "name.",
    ("gateway", "virtual_host_domain"): "Domain for virtual-hosted-style requests "
    "(BUCKET.domain); unset: path style only.",
    ("gateway", "max_skew_s"): "Largest accepted clock difference of a signed request (AWS: "
    "900 s); at most 3600.",
    ("gateway", "max_object_size"): "Largest object one PutObject or POST upload carries; a "
    "bigger one is refused with 400 EntityTooLarge (AWS: 5 GiB). Bigger objects go by "
    "multipart upload (10,000 parts of at most 5 GiB, as AWS).",
    ("gateway", "max_header_bytes"): "Largest request head (request line and header lines "
    "together); bigger ones are refused before any work (S3: 400 RequestHeaderSectionTooLarge; "
    "admin listener: 431 JSON), "
    "and a connection still sending one is closed. At least 8192 (AWS's own cap).",
    ("gateway", "header_timeout_s"): "A request's headers must be complete within this time "
    "of their first byte (of the connection's opening, for its first request); so must a "
    "body read before its sender is known (a console login's, a POST upload's fields before "
    "its file, an object-lock body a bucket policy's condition needs) and an admin request's "
    "body, each whole within this time of its start; protects against clients that stall "
    "connections open.",
    ("gateway", "shred_wait_s"): "Default waiting period before a tenant shred destroys its "
    "keys (a window to cancel); 0 shreds at once.",
    ("gateway", "cpu_threads"): "Threads for hashing, sealing and erasure coding. More uses "
    "more cores per gateway; beyond the core count it only adds contention.",
    ("gateway", "upload_budget_bytes"): "Memory all uploads of the whole gateway may hold "
    "at once, every worker process together (each of `workers` holds an equal share: 128 "
    "MiB of the default with 2 workers; but never less than the largest upload's footprint "
    "with room for a small one beside it, ~62 MiB with 4+2 and ~77 MiB with a 3+3 archive "
    "profile, so with many workers the gateway may hold that many times it) "
    "(receive buffers, segments being read and coded, frames queued to nodes: up to ~60 "
    "MiB for a part of 8 MiB or more with the default 4+2, ~2.5 times its size for a "
    "smaller object). An upload is admitted with its minimum (its receive buffers and one "
    "segment, ~8 MiB; a smaller object its whole footprint) and counts further segments and "
    "frames while it holds them; one whose minimum does not fit waits its turn before its "
    "body is read (a small "
    "one, up to a sixteenth of the budget, may pass a large one during its first 2 s of "
    "waiting); an S3 request that waits 30 s gets 503 SlowDown, which SDKs retry. One "
    "larger than the budget is cut to it, so a single upload always proceeds.",
    ("gateway", "workers"): "Gateway processes serving S3 on the same address (one listening "
    "socket; a worker accepts while it holds no more connections than any other), 0 = one "
    "per core; the first also serves admin and runs the background workers. "
    "`tessera gateway --workers N` overrides it.",
    ("gateway", "accept_grace_s"): "How long a new connection waits for the gateway worker "
    "whose turn it is before another worker takes it anyway (a stalled worker never stops "
    "service).",
    ("gateway", "deep_scrub_rate_mbps"): "Shard bytes per second the deep scrub reads, decodes "
    "and authenticates (0 = off). Faster finds lying shards sooner and takes I/O from "
    "clients.",
    ("gateway", "deep_scrub_pause_s"): "Rest between two full deep-scrub passes.",
    ("gateway", "metrics_refresh_s"): "How often the gateway recomputes the cluster gauges of "
    "`/metrics` (status figures, per-tenant usage sweep). Shorter is fresher and costs "
    "metadata scans and a call to every node each time; a refresh that took longer than a "
    "tenth of this waits nine times its own duration before the next.",
    ("gateway", "health_probe_s"): "How often the gateway probes every node's health (the "
    "nodes seen down four times as often, so a return is noticed fast). A node that fails "
    "a request is marked at once whatever this is; the gateway's worker processes share "
    "one view of node health and only the first of them probes.",
    ("gateway", "console_session_idle_s"): "A web console session ends after this long "
    "without a request (log in again). Shorter limits what a forgotten open browser exposes.",
    ("gateway", "console_session_max_s"): "A web console session ends this long after its "
    "login however active it is.",
    ("metadata", "backend"): "`sqlite` (embedded, one file on one disk, one gateway) or `etcd` "
    "(Raft across zones, several gateways). The store's durability is every object's floor.",
    ("metadata", "path"): "SQLite file, relative to data_dir.",
    ("metadata", "etcd_endpoints"): "Client URLs of all etcd members; the client fails over "
    "between them.",
    ("metadata", "etcd_ca_file"): "PEM CA that etcd members' certificates are checked "
    "against (mutual TLS; the three etcd_*_file keys go together, paths relative to data_dir).",
    ("metadata", "etcd_cert_file"): "PEM client certificate shown to etcd members started "
    "with --client-cert-auth.",
    ("metadata", "etcd_key_file"): "PEM private key of etcd_cert_file (keep it 0600: it acts "
    "as Tessera on etcd).",
    ("profiles.NAME", "k"): "Data shards per stripe; any k of k+m rebuild it.",
    ("profiles.NAME", "m"): "Parity shards: losses survived. At most m shards sit in one "
    "zone, so a zone loss is survivable; storage overhead is (k+m)/k.",
    ("profiles.NAME", "role"): "Node role the profile's shards go to (`standard` or "
    "`archive`).",
    ("profiles.NAME", "compress"): "Compress (zstd) before encrypting; saves space on "
    "compressible data at CPU cost (archive tier).",
    ("[nodes]", "id"): "Node id, unique; manifests name nodes by id, never by address.",
    ("[nodes]", "zone"): "Availability zone; placement keeps at most m shards per zone.",
    ("[nodes]", "address"): "HOST:PORT the node listens on and gateways reach it at.",
    ("[nodes]", "role"): "`standard` or `archive`.",
    ("[nodes]", "weight"): "Relative share of placements (capacity); the rebalancer evens "
    "usage by it.",
    ("archive", "day_seconds"): "Length of a lifecycle/restore day. Shorter days make "
    "lifecycle rules and restores happen in seconds (tests, trials). Written by `tessera up "
    "--day-seconds N` at first start only; later, edit it here with the cluster stopped (add "
    "the key if missing). The only setting restore timing follows: `tessera config set "
    "lifecycle.day_seconds` does not change it.",
    ("archive", "lifecycle_interval_s"): "Pause between lifecycle passes (at most a quarter "
    "of the lifecycle day).",
    ("archive", "expedited_s"): "Expedited restore latency, in real-world seconds scaled by "
    "day_seconds / 86400.",
    ("archive", "standard_s"): "Standard restore latency (scaled as expedited_s).",
    ("archive", "bulk_s"): "Bulk restore latency (scaled as expedited_s).",
    ("archive", "deep_standard_s"): "DEEP_ARCHIVE standard restore latency (scaled as "
    "expedited_s).",
    ("archive", "deep_bulk_s"): "DEEP_ARCHIVE bulk restore latency (scaled as expedited_s).",
    ("repair", "rate_bytes_s"): "Rebuilt bytes per second while clients are idle, and always "
    "for stripes at risk (fewer than k+2 healthy shards, or zone-unsafe) (0 = unlimited).",
    ("repair", "busy_rate_bytes_s"): "...while S3 clients are active, for stripes that are "
    "already safe: their repair yields to clients (0 = as idle). Higher restores redundancy "
    "sooner at clients' expense. The floor of an adaptive rate when busy_lag_ms > 0.",
    ("repair", "busy_lag_ms"): "While S3 clients are active, the busy rate grows from "
    "busy_rate_bytes_s toward rate_bytes_s (x1.5 per 0.5 s) while the gateway's event loop "
    "lags less than this, and halves when it lags more: repair uses spare capacity, clients "
    "keep their latency. 0 = the fixed busy_rate_bytes_s.",
    ("repair", "down_grace_s"): "A down node's shards are rebuilt elsewhere after this long. "
    "Shorter shrinks the window of reduced redundancy; longer avoids rebuilding for a reboot.",
    ("repair", "sweep_interval_s"): "Pause between two full sweeps that stat every shard.",
    ("repair", "sweep_batch"): "Stripes checked per sweep step.",
    ("repair", "sweep_rate_stripes_s"): "Stripes the sweep checks per second on average "
    "while every node is up (a burst of a minute's worth first: clusters under that "
    "many stripes sweep as fast as before; 0 = unlimited). Bounds the idle cost of a large "
    "cluster; while a node is down or out, and when one changes state or restarts, the "
    "sweep runs unpaced. Higher finds a shard lost on an up node sooner at a CPU cost.",
    ("repair", "orphan_grace_s"): "Unreferenced shards younger than this are kept "
    "(uploads in flight); a write not committed within this less 10% is refused "
    "(S3 RequestTimeout), since its first shards may already be swept.",
    ("repair", "parallel"): "Stripes rebuilt at once.",
    ("rebalance", "rate_bytes_s"): "Bytes moved per second by the rebalancer while clients "
    "are idle (0 = unlimited).",
    ("rebalance", "busy_rate_bytes_s"): "...while S3 clients are active (0 = as idle); the "
    "floor of an adaptive rate when busy_lag_ms > 0.",
    ("rebalance", "busy_lag_ms"): "As [repair] busy_lag_ms, for the rebalancer.",
    ("rebalance", "parallel"): "Stripes moved at once.",
    ("rebalance", "batch"): "Stripes examined per step.",
    ("rebalance", "max_moves"): "Balance moves per pass (draining is not bounded).",
    ("rebalance", "threshold"): "A node below mean x (1 - threshold) receives shards; lower "
    "evens usage more tightly and moves more data.",
    ("rebalance", "min_gap_bytes"): "...and only when at least this far below the mean.",
    ("rebalance", "interval_s"): "Pause between passes when nothing is draining.",
    ("scrub", "rate_bytes_s"): "Each node's checksum scrub rate (0 = off; also `python -m "
    "nodes --scrub-rate`). Faster finds bit rot sooner and takes disk time from clients.",
    ("scrub", "pause_s"): "Rest between two scrub passes of a node.",
    ("packs", "max_shard_bytes"): "Whole shards up to this many bytes are appended to the "
    "node's pack files (one group-committed fdatasync for many shards, no inode each) "
    "instead of a file each; 0 = off (every shard a file). Shard files from before stay "
    "readable, and packs stay readable with it off.",
    ("packs", "seal_bytes"): "A pack file takes no more appends once it is this large.",
    ("packs", "compact_ratio"): "A sealed pack with less than this share of its bytes live "
    "(not deleted or replaced) is compacted: its live records are copied forward and the pack "
    "is removed. Higher reclaims space sooner and rewrites more bytes; at least 0, below 1.",
    ("packs", "compact_interval_s"): "How often each node looks for packs to compact.",
    ("packs", "compact_rate_bytes_s"): "Bytes a node's background compaction copies per "
    "second at most; client writes go between its steps.",
    ("packs", "reserve_bytes"): "Space each node disk keeps allocated (`packs/reserve`), "
    "given up a piece at a time only when a DELETE's tombstone or a compaction step finds the "
    "disk full: freeing packed space takes space. While any of it is given up, packed PUTs "
    "are refused (507) until it is whole again. -1 = `seal_bytes`: one pack always holds a "
    "compaction candidate's records, so a full disk can compact (emptiest packs first; one "
    "that does not fit in free space plus the reserve is skipped). Smaller costs less disk and "
    "may leave a full disk unable to compact; 0 = none; it guards nothing when nodes share a "
    "file system (the test suite's keep 256 KiB).",
    ("workers", "gc_grace_s"): "Age before an aborted or replaced version's shards are "
    "collected; must exceed the longest upload.",
    ("workers", "lease_ttl_s"): "Background-worker lease TTL: a dead gateway's workers move "
    "after this long; shorter fails over faster and renews more often.",
    ("lifecycle", "day_seconds"): "Length of a lifecycle \"day\" for bucket lifecycle rules "
    "(Days counts and day rounding of what the worker does); 0 = [archive] day_seconds, else "
    "0.1 to 86400 (a test knob that only shortens days). The `x-amz-expiration` / "
    "`x-amz-abort-date` headers keep S3's calendar dates (midnight UTC after N real days) "
    "whatever this says. Change it on a running cluster with `tessera config set "
    "lifecycle.day_seconds N` (stored in the metadata, read by every gateway at once; "
    "`tessera config unset` returns to this value). It does not change restore timing "
    "(RestoreObject tiers), which follows `[archive] day_seconds` only.",
    ("lifecycle", "version_place_retention_s"): "How long (real seconds) a deleted version's "
    "place in its key's history is kept: a ListObjectVersions page that ended at a version "
    "deleted within this long resumes exactly after it; later, at the time in its id (a "
    "version committed while that version's write was in flight can then be skipped). Each "
    "lifecycle pass drops older places, so a bucket keeps about this long's worth of "
    "deletes (~100 bytes each); longer covers slower listers and costs metadata.",
    ("access_log", "flush_interval_s"): "Server access logs (PutBucketLogging): a source "
    "bucket's records are delivered into its target bucket at most this long after they are "
    "staged. Shorter gives fresher logs in more, smaller log objects.",
    ("access_log", "stage_interval_s"): "Access-log records wait at most this long in a "
    "gateway's memory before they are written to the metadata store (a crash loses at most "
    "this much; a clean shutdown loses nothing).",
    ("audit", "max_bytes"): "The admin audit log (DATA/audit/audit.log, one fsynced JSON line "
    "per admin action that got past its refusal; refused requests go to audit-refused.log) "
    "is rotated before it would grow past this: renamed audit.log.1 (older "
    "ones shift up) and a new one begun, so the audit log takes at most about "
    "max_bytes x (backups + 1) of disk (an entry's string fields are capped at 256 "
    "characters).",
    ("audit", "backups"): "Rotated audit files kept (audit.log.1 the newest); the oldest past "
    "this is deleted. GET /admin/v1/audit lists the rotated files too, newest first.",
    ("audit", "refused_max_bytes"): "Refused admin and console requests (unauthenticated, "
    "a bad signature, not an admin key, a bad session: results `denied:`) are written to "
    "DATA/audit/audit-refused.log, rotated past this size on its own, so a flood of them, "
    "which needs no key, never rotates the record of real admin actions away. Rotations are "
    "counted in tessera_audit_rotations_total{file=\"refused\"}.",
    ("audit", "refused_backups"): "Rotated audit-refused.log files kept "
    "(audit-refused.log.1 the newest); the oldest past this is deleted.",
    ("access_log", "max_buffered"): "Access-log records a gateway holds in memory; past "
    "this, new records are dropped and counted (the metadata store is not keeping up).",
}
# Environment-only settings (a process logs before it reads its config).
LOG_DOCS = {"max_bytes": "Size at which a process's log file (DATA/logs/NAME.log) is rotated.",
            "backups": "Rotated log files kept."}


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: Callable[[], Any]  # read from the code at generation time
    doc: str


def _field(cls: type, name: str, scale: float = 1.0) -> Callable[[], Any]:
    def get() -> Any:
        v = {f.name: f for f in dataclasses.fields(cls)}[name].default
        return v * scale if scale != 1.0 else v
    return get


def _const(v: Any) -> Callable[[], Any]:
    return lambda: v


def _override(o: c.EnvOverride) -> EnvVar:
    """An ENV_OVERRIDES entry: its key's default, in the variable's unit."""
    if o.section == "logging":
        return EnvVar(o.name, _field(c.LogSettings, o.key), LOG_DOCS[o.key])
    cls = c.GatewayConfig if o.section == "gateway" else c.SETTINGS_SECTIONS[o.section]
    unit = " (in MiB)" if o.scale != 1.0 else ""
    return EnvVar(o.name, _field(cls, o.key, 1 / o.scale), f"Overrides [{o.section}] "
                  f"{o.key}{unit}.")


ENV_VARS: list[EnvVar] = [
    EnvVar(c.ENV_CONFIG, _const("DATA/tessera.toml (written to tessera.env)"),
           "Config file the CLI commands (`volume`, `lifecycle`) open."),
    EnvVar(c.ENV_ADMIN_URL, _const("from tessera.env"), "Admin API the operator CLI calls."),
    EnvVar(c.ENV_ADMIN_ACCESS_KEY, _const("from tessera.env"),
           "Admin credential the operator CLI signs with (SigV4)."),
    EnvVar(c.ENV_ADMIN_SECRET_KEY, _const("from tessera.env"), "Its secret."),
    EnvVar(ENV_EXIT_WITH_PID, _const("unset"),
           "Comma-separated pids: `tessera up` and the block daemon shut down cleanly when "
           "any of them exits (the test suite names its own, so a killed run leaves no "
           "cluster or mount)."),
    *(_override(o) for o in c.ENV_OVERRIDES),
]


def _fmt(v: Any, name: str = "") -> str:
    if v is dataclasses.MISSING:
        return "(required)"
    if v is None:
        return "unset"
    if isinstance(v, tuple):
        return f"`{list(v)}`"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    sized = any(w in name.lower() for w in ("bytes", "size"))
    if sized and isinstance(v, int) and not isinstance(v, bool) and v >= 1024 and v % 1024 == 0:
        for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if v % size == 0:
                return f"`{v}` ({v // size} {unit})"
    if isinstance(v, str):
        return f'`"{v}"`'
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    return f"`{v}`"


def _toml_default(cls: type, name: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
        return list(v) if isinstance(v, tuple) else v
    return dataclasses.MISSING


def missing_docs() -> list[str]:
    """Config keys without an explanation (and explanations of keys that do not exist)."""
    return sorted({f"[{s}] {k}" for s, k in set(TOML_SOURCES) ^ set(TOML_DOCS)})


def render() -> str:
    """The whole of docs/CONFIG.md."""
    out = ["# Configuration", "",
           "Generated by `python -m storage.configdoc > docs/CONFIG.md` from the config "
           "dataclasses (`storage/config.py`) and the workers' settings; "
           "`tests/unit/test_configdoc.py` fails when this file is stale. Do not edit by hand.",
           "",
           "`tessera up` writes `DATA/tessera.toml` at first start; every process of a cluster "
           "reads the same file (`--config`). Unknown keys are refused at start.", ""]
    section = None
    for (sec, key), (cls, name) in TOML_SOURCES.items():
        if sec != section:
            section = sec
            title = {"": "Top level", "[nodes]": "[[nodes]] (one per node)",
                     "profiles.NAME": "[profiles.NAME] (one per erasure profile)"}.get(
                         sec, f"[{sec}]")
            out += ["", f"## {title}", "", "| key | default | what it does and trades off |",
                    "|---|---|---|"]
        default = _toml_default(cls, name)
        if (sec, key) == ("", "data_dir"):
            default = "the config file's directory"
            shown = default
        else:
            shown = _fmt(default, key)
        out.append(f"| `{key}` | {shown} | {TOML_DOCS.get((sec, key), '')} |")
    out += ["", "## [storage_classes]", "",
            "Maps an S3 storage class to a profile name, e.g. `GLACIER = \"archive\"`; classes "
            "not listed use `default_profile`.", "",
            "## Environment variables", "", "| variable | default | what it does and trades "
            "off |", "|---|---|---|"]
    for e in ENV_VARS:
        d = e.default()
        shown = d if isinstance(d, str) and " " in d else _fmt(d, e.name)
        out.append(f"| `{e.name}` | {shown} | {e.doc} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    gaps = missing_docs()
    if gaps:
        sys.exit(f"undocumented or unknown config keys: {', '.join(gaps)}")
    sys.stdout.write(render())
