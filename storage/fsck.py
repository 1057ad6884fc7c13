"""`tessera fsck`: check the metadata against itself and against the shards the nodes hold.

Read only. One pass over every metadata record (in pages) and one listing of every node's
shards, then each invariant the write paths keep (docs/ARCHITECTURE.md §2, §6):

errors (something is wrong; exit status 1):
- `unreadable`: a stripe a record names (object version, restored copy, multipart part,
  volume extent or journal segment) with fewer than k of its named copies on their nodes;
- `unindexed`: an object, part, restored-copy or journal stripe with no stripe index entry
  (`X`): repair never sees it, and the collector would treat its shards as nobody's;
- `dangling-index`: an index entry whose stripe no record names;
- `parts-without-upload`: part records (`P`) of an upload that has no record;
- `volume-leftovers`: extent pointers or journal segments of a volume that is neither a
  volume nor a delete in progress (`VD`): nothing would ever retire them;
- `version-not-listed`: a key's current version missing from its version history;
- `undecodable`: a record that does not decode.

warnings (the background workers settle them):
- `degraded`: fewer copies than the stripe has shards but at least k (repair);
- `orphan-shards`: shards on nodes no record names and no GC entry queues (the repair
  sweep deletes them after `[repair] orphan_grace_s`: a write in flight makes some too);
- `volume-delete-pending`: a volume delete the reclaim worker is finishing;
- `node-unreachable`: a node that did not list its shards (its copies are not counted
  missing, and its orphans not seen).

Made for a cluster at rest; on a live one a write or collection racing the pass can show as
a transient warning (or, for a stripe committed between the two passes, `unindexed` is not
reported: the records are read first, the nodes after).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.config_sections import NodeSpec
from storage.errors import StorageError
from storage.keyspace import next_key
from storage.keyspace import unpack as unpack_key
from storage.metadata import Item, MetadataStore
from storage.multipart_records import Part
from storage.records import ObjectVersion, unpack
from storage.shards.ids import parse_shard_id
from storage.shards.transport import NodeTransport

PAGE = 1000
ERRORS = ("unreadable", "unindexed", "dangling-index", "parts-without-upload",
          "volume-leftovers", "version-not-listed", "undecodable")


@dataclass
class Named:
    """A stripe as a record names it."""

    nodes: list[str | None]
    k: int
    where: str  # what names it, for the report
    indexed: bool  # whether its record kind keeps an X entry (volume extents do not)


@dataclass
class FsckReport:
    counts: dict[str, int] = field(default_factory=dict)
    findings: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, what: str) -> None:
        self.findings[kind].append(what)

    @property
    def errors(self) -> int:
        return sum(len(self.findings.get(k, [])) for k in ERRORS)

    def lines(self, limit: int = 20) -> list[str]:
        out = ["checked: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())]
        for kind, items in self.findings.items():
            level = "ERROR" if kind in ERRORS else "warning"
            out.append(f"{level} {kind}: {len(items)}")
            out += [f"  {x}" for x in items[:limit]]
            if len(items) > limit:
                out.append(f"  ... and {len(items) - limit} more")
        out.append(f"{self.errors} error(s)" if self.errors else "no errors")
        return out

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "errors": self.errors,
                "findings": {k: v for k, v in self.findings.items()}}


async def _records(meta: MetadataStore) -> AsyncIterator[Item]:
    start, end = b"", b"\xff"
    while True:
        items = await meta.range(start, end, limit=PAGE)
        for it in items:
            yield it
        if len(items) < PAGE:
            return
        start = next_key(items[-1].key)


class _Scan:
    """What one pass over the records found."""

    def __init__(self) -> None:
        self.named: dict[bytes, Named] = {}
        self.index: set[bytes] = set()
        self.queued: set[bytes] = set()
        self.uploads: set[str] = set()
        self.parts: dict[str, int] = defaultdict(int)
        self.volumes: set[str] = set()
        self.gone: set[str] = set()
        self.pointers: dict[str, int] = defaultdict(int)
        self.current: dict[tuple[str, str], str] = {}
        self.history: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.counts: dict[str, int] = defaultdict(int)

    def version(self, kind: str, key: tuple[str, ...], v: ObjectVersion) -> None:
        where = f"{key[1]}/{key[2]}@{v.version_id}"
        if kind == "O":
            self.current[(key[1], key[2])] = v.version_id
        else:
            self.history[(key[1], key[2])].add(v.version_id)
        for p in v.parts:
            if p.stripe_id:
                self.named[bytes(p.stripe_id)] = Named(list(p.nodes), p.k, where, True)
        for r in v.restore.get("parts") or []:
            self.named[bytes(r["stripe_id"])] = Named(list(r["nodes"]), int(r.get("k", 0)),
                                                     f"restored copy of {where}", True)

    def record(self, it: Item) -> None:
        key = unpack_key(it.key)
        kind = key[0]
        self.counts[kind] += 1
        if kind in ("O", "V"):
            self.version(kind, key, ObjectVersion.decode(it.value))
        elif kind == "P":
            p = Part.decode(it.value)
            self.parts[key[1]] += 1
            if p.stripe_id:
                self.named[bytes(p.stripe_id)] = Named(list(p.nodes), p.k,
                                                       f"upload {key[1]} part {key[2]}", True)
        elif kind == "U":
            self.uploads.add(key[3])
        elif kind == "X":
            self.index.add(bytes.fromhex(key[1]))
        elif kind == "G":
            self.queued.add(bytes.fromhex(key[2]))
        elif kind == "VOL":
            self.volumes.add(str(unpack(it.value)["id"]))
        elif kind == "VD":
            self.gone.add(key[1])
        elif kind in ("VX", "VJ", "VJK"):
            self.pointers[key[1]] += 1
            p = unpack(it.value)
            if p.get("stripe") and not p.get("trim"):
                self.named[bytes(p["stripe"])] = Named(
                    list(p.get("nodes") or []), int(p.get("k", 0)),
                    f"volume {key[1]} {'extent' if kind == 'VX' else 'journal'}",
                    kind != "VX")


async def _shards(nodes: NodeTransport, specs: Sequence[NodeSpec], report: FsckReport,
                  ) -> tuple[dict[bytes, set[tuple[int, str]]], set[str]]:
    """Every (index, node) copy per stripe the nodes list; the nodes that did not answer."""
    held: dict[bytes, set[tuple[int, str]]] = defaultdict(set)
    missing: set[str] = set()
    for node in specs:
        after = ""
        try:
            while True:
                ids = await nodes.list_shards(node, after=after, limit=PAGE)
                for sid in ids:
                    try:
                        stripe, index = parse_shard_id(sid)
                    except ValueError:
                        continue
                    held[stripe].add((index, node.id))
                if len(ids) < PAGE:
                    break
                after = ids[-1]
        except (StorageError, OSError) as exc:
            missing.add(node.id)
            report.add("node-unreachable", f"{node.id}: {exc}")
    return held, missing


async def fsck(meta: MetadataStore, nodes: NodeTransport, specs: Sequence[NodeSpec],
               ) -> FsckReport:
    """Check every record and every node's shards (module docstring)."""
    report = FsckReport()
    scan = _Scan()
    async for it in _records(meta):
        try:
            scan.record(it)
        except Exception as exc:  # noqa: BLE001 - a record that does not decode is a finding
            report.add("undecodable", f"{it.key!r}: {exc!r}")
    held, unreachable = await _shards(nodes, specs, report)
    for sid, n in scan.named.items():
        if n.indexed and sid not in scan.index:
            report.add("unindexed", f"stripe {sid.hex()} of {n.where}")
        copies = held.get(sid, set())
        named = [(i, node) for i, node in enumerate(n.nodes) if node]
        present = sum(1 for c in named if c in copies or c[1] in unreachable)
        if n.k and present < n.k:
            report.add("unreadable", f"stripe {sid.hex()} of {n.where}: {present} of "
                                     f"{len(n.nodes)} copies, {n.k} needed")
        elif present < len(n.nodes):
            report.add("degraded", f"stripe {sid.hex()} of {n.where}: {present} of "
                                   f"{len(n.nodes)} copies")
    for sid in sorted(scan.index - scan.named.keys()):
        report.add("dangling-index", f"stripe {sid.hex()}")
    for up in sorted(scan.parts.keys() - scan.uploads):
        report.add("parts-without-upload", f"upload {up}: {scan.parts[up]} part(s)")
    for vid in sorted(scan.pointers.keys() - scan.volumes - scan.gone):
        report.add("volume-leftovers", f"volume {vid}: {scan.pointers[vid]} record(s)")
    for vid in sorted(scan.gone):
        report.add("volume-delete-pending", f"volume {vid}")
    for ok, vid in sorted(scan.current.items()):
        if scan.history.get(ok) and vid not in scan.history[ok]:
            report.add("version-not-listed", f"{ok[0]}/{ok[1]} current version {vid}")
    orphans = [sid for sid in held if sid not in scan.named and sid not in scan.queued]
    for sid in sorted(orphans):
        report.add("orphan-shards", f"stripe {sid.hex()}: {len(held[sid])} shard(s)")
    report.counts = {"records": sum(scan.counts.values()),
                     "object versions": scan.counts["O"] + scan.counts["V"],
                     "stripes named": len(scan.named), "nodes": len(specs),
                     "shards": sum(len(c) for c in held.values())}
    return report
