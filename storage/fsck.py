"""`tessera fsck`: check the metadata against itself and against the shards the nodes hold.

Read only. Two streaming passes, memory bounded by a page of each input (plus the open
uploads, the volumes and the garbage-collection queue, never the stripes):

1. every metadata record in key order: each stripe a record names (object version, restored
   copy, multipart part, journal segment) must have its stripe index entry (`X`), a part
   its upload, a volume pointer its volume, a current version its place in the history;
2. the `X` entries and every node's shard listing, all sorted by stripe, merged: each
   indexed stripe's manifest (`workers.manifests.load_manifest`, as repair reads it) against
   the copies the nodes list, and shards no entry names.

errors (exit status 1):
- `unreadable`: fewer than k of a stripe's named copies on their nodes;
- `unindexed`: an object, part, restored-copy or journal stripe with no `X` entry;
- `dangling-index`: an `X` entry whose stripe no record names;
- `parts-without-upload`, `volume-leftovers` (pointers of no volume and no delete in
  progress), `version-not-listed` (a current version missing from its history),
  `undecodable` (a record that does not decode).

warnings (the background workers settle them): `degraded` (at least k copies, fewer than
all), `orphan-shards` (shards no entry names and no GC entry queues; a write in flight makes
some), `volume-delete-pending`, `retirement-pending` (the `X` entry of a removed version's
stripe that a pending retirement marker (`RT`, `storage/retiring.py`) deletes in its steps),
`archive-staging` (the `X` entry of a many-part archive copy staged ahead of its swap:
`storage/archive_staging.py`),
`rebuild-refused` (a stripe repair refused to rebuild
`workers.repair.REFUSED_ALARM` times in a row: its k shards read do not authenticate).

Incomplete (exit status 2 when nothing is an error): a node that did not list its shards
(`unreachable`). Its copies are *unchecked*, never counted present or missing: a stripe
whose checked copies reach k is readable, one whose checked plus unchecked copies stay below
k is `unreadable`, and one in between is counted unchecked.

On a live cluster: a finding that a concurrent write, overwrite, delete or collection can
make (every error kind above) is re-checked against fresh reads of the records (and of the
stripe's copies on its nodes) it came from before it is reported; when the fresh read shows
the record changed or gone, the finding is dropped and counted as `changed during the check`.
Warnings are not re-checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage import keyspace as ks
from storage.config_sections import NodeSpec
from storage.errors import StorageError
from storage.metadata import Item, MetadataStore
from storage.multipart_records import Part
from storage.records import ObjectVersion, unpack
from storage.shards.ids import parse_shard_id
from storage.shards.transport import NodeTransport
from storage.workers.manifests import Manifest, load_manifest, restored_parts
from storage.workers.repair import refused_alarm

PAGE = 1000
KEEP = 1000  # findings kept (and shown by --json) per kind; all are counted
ERRORS = ("unreadable", "unindexed", "dangling-index", "parts-without-upload",
          "volume-leftovers", "version-not-listed", "undecodable")
POINTERS = (ks.EXTENT, ks.JOURNAL, ks.JOURNAL_KEPT)
Progress = Callable[[str, int], None]  # (pass name, items done)


@dataclass
class FsckReport:
    """What fsck found: per kind, a count and the first `KEEP` findings."""

    counts: dict[str, int] = field(default_factory=dict)
    findings: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unreachable: dict[str, str] = field(default_factory=dict)  # node id -> why
    unchecked_copies: int = 0  # named copies on unreachable nodes
    unchecked_stripes: int = 0  # readable or not depending on those copies
    changed: int = 0  # findings a fresh read showed were a concurrent change

    def add(self, kind: str, what: str) -> None:
        self.totals[kind] += 1
        if len(self.findings[kind]) < KEEP:
            self.findings[kind].append(what)

    @property
    def errors(self) -> int:
        return sum(self.totals.get(k, 0) for k in ERRORS)

    @property
    def incomplete(self) -> bool:
        return bool(self.unreachable)

    def status(self) -> int:
        """0 clean, 1 errors found, 2 the check could not look at every node."""
        return 1 if self.errors else 2 if self.incomplete else 0

    def as_json(self) -> dict[str, Any]:
        return {"status": ("errors" if self.errors else
                           "incomplete" if self.incomplete else "clean"),
                "counts": self.counts, "errors": self.errors,
                "totals": dict(self.totals), "findings": dict(self.findings),
                "unreachable": self.unreachable, "unchecked_copies": self.unchecked_copies,
                "unchecked_stripes": self.unchecked_stripes,
                "changed_during_check": self.changed}


async def _pages(meta: MetadataStore, start: bytes, end: bytes) -> AsyncIterator[Item]:
    while True:
        items = await meta.range(start, end, limit=PAGE)
        for it in items:
            yield it
        if len(items) < PAGE:
            return
        start = ks.next_key(items[-1].key)


async def _exists(meta: MetadataStore, prefix: bytes) -> bool:
    return bool(await meta.range(*ks.span(prefix), limit=1))


async def _space_ids(meta: MetadataStore, name: str, pick: Callable[[Item], str]) -> set[str]:
    return {pick(it) async for it in _pages(meta, *ks.space(name))}


def _version_stripes(v: ObjectVersion, name: str) -> list[tuple[bytes, str]]:
    """The stripes an object version names (its parts, its restored copy) and how."""
    return ([(bytes(p.stripe_id), name) for p in v.parts if p.stripe_id]
            + [(bytes(p.stripe_id), f"restored copy of {name}") for p in restored_parts(v)])


class _Records:
    """Pass 1: every record in key order, with state bounded by uploads and volumes."""

    def __init__(self, meta: MetadataStore, report: FsckReport) -> None:
        self.meta, self.report = meta, report
        self.uploads: set[str] = set()
        self.parts: dict[str, int] = defaultdict(int)
        self.volumes: set[str] = set()
        self.gone: set[str] = set()
        self.pointers: dict[str, int] = defaultdict(int)
        self.queued: set[bytes] = set()  # GC queue entries (not orphans)
        self.retiring: set[bytes] = set()  # stripes a pending retirement marker names
        self.unindexed: set[bytes] = set()  # named without X (not orphans either)
        self.counts: dict[str, int] = defaultdict(int)
        self.legacy = 0  # extents written before extents were indexed (no X, not checked)
        self.vnext: AsyncIterator[Item] | None = None  # the history cursor (_in_history)
        self.vhead: Item | None = None

    async def _changed(self, it: Item) -> bool:
        """Whether record `it` changed or went since it was read (then count it)."""
        now = await self.meta.get(it.key)
        if now is None or now.revision != it.revision:
            self.report.changed += 1
            return True
        return False

    async def _indexed(self, it: Item, stripe: bytes, where: str, must: bool) -> None:
        if await self.meta.get(ks.stripe_index_key(stripe)) is not None:
            return
        if await self._changed(it) or await self.meta.get(ks.stripe_index_key(stripe)):
            return
        self.unindexed.add(stripe)  # normally none: such stripes are rare, not per stripe
        if not must:
            self.legacy += 1
        else:
            self.report.add("unindexed", f"stripe {stripe.hex()} of {where}")

    async def _in_history(self, bucket: str, key: str, vid: str) -> bool:
        """`_listed` from a cursor over the whole history space (`V`), which is in the same
        (bucket, key) order as the current versions (`O`) the pass meets: no read per key."""
        if self.vnext is None:
            self.vnext = _pages(self.meta, *ks.space(ks.VERSION))
            self.vhead = await anext(self.vnext, None)
        prefix, seen, found = ks.version_prefix(bucket, key), False, False
        while self.vhead is not None and (self.vhead.key < prefix
                                          or self.vhead.key.startswith(prefix)):
            if self.vhead.key.startswith(prefix):
                seen = True
                found = found or ObjectVersion.decode(self.vhead.value).version_id == vid
            self.vhead = await anext(self.vnext, None)
        return found or not seen

    async def _listed(self, bucket: str, key: str, vid: str) -> bool:
        """Whether `vid` is in the key's version history, or it has none (a fresh read)."""
        empty = True
        async for it in _pages(self.meta, *ks.span(ks.version_prefix(bucket, key))):
            empty = False
            if ObjectVersion.decode(it.value).version_id == vid:
                return True
        return empty

    async def record(self, it: Item) -> None:
        key = ks.unpack(it.key)
        kind = key[0]
        self.counts[kind] += 1
        if kind in (ks.OBJECT, ks.VERSION):
            v = ObjectVersion.decode(it.value)
            name = f"{key[1]}/{key[2]}@{v.version_id}"
            for sid, where in _version_stripes(v, name):
                await self._indexed(it, sid, where, True)
            if kind == ks.OBJECT and not await self._in_history(key[1], key[2],
                                                                v.version_id):
                if not await self._changed(it) and not await self._listed(
                        key[1], key[2], v.version_id):
                    self.report.add("version-not-listed",
                                    f"{key[1]}/{key[2]} current version {v.version_id}")
        elif kind == ks.PART:
            p = Part.decode(it.value)
            self.parts[key[1]] += 1
            if p.stripe_id:
                await self._indexed(it, bytes(p.stripe_id), f"upload {key[1]} part {key[2]}",
                                    True)
        elif kind == ks.UPLOAD:
            self.uploads.add(key[3])
        elif kind == ks.GC:
            self.queued.add(bytes.fromhex(key[2]))
        elif kind == ks.REPAIR:
            alarm = refused_alarm(it.key, unpack(it.value))
            if alarm is not None:
                self.report.add("rebuild-refused", f"stripe {alarm['stripe']}: rebuild refused "
                                f"{alarm['refused']} times in a row ({alarm['error']})")
        elif kind == ks.VOLUME:
            self.volumes.add(str(unpack(it.value)["id"]))
        elif kind == ks.VOLUME_GONE:
            self.gone.add(key[1])
        elif kind == ks.RETIRING and "upload" in (m := unpack(it.value)):
            self.uploads.add(str(m["upload"]))  # its part records go in steps (`retiring`)
        elif kind == ks.RETIRING:  # a removed version's stripes: their X entries go in steps
            self.retiring.update(bytes(s[0]) for s in unpack(it.value).get("stripes", []))
        elif kind in POINTERS:
            self.pointers[key[1]] += 1
            p = unpack(it.value)
            if p.get("stripe") and not p.get("trim"):
                # extents written before extents were indexed have no X: not an error
                await self._indexed(it, bytes(p["stripe"]), f"volume {key[1]} "
                                    f"{'extent' if kind == ks.EXTENT else 'journal'}",
                                    kind != ks.EXTENT)

    async def finish(self) -> None:
        """The findings that need the whole pass, each re-read fresh."""
        report, meta = self.report, self.meta
        if self.parts.keys() - self.uploads:
            uploads = await _space_ids(meta, ks.UPLOAD, lambda it: ks.unpack(it.key)[3])
            for up in sorted(self.parts.keys() - self.uploads):
                if up in uploads or not await _exists(meta, ks.part_prefix(up)):
                    report.changed += 1
                else:
                    report.add("parts-without-upload", f"upload {up}: {self.parts[up]} part(s)")
        if self.pointers.keys() - self.volumes - self.gone:
            vols = await _space_ids(meta, ks.VOLUME, lambda it: str(unpack(it.value)["id"]))
            for vid in sorted(self.pointers.keys() - self.volumes - self.gone):
                if (vid in vols or await meta.get(ks.volume_gone_key(vid)) is not None
                        or not any([await _exists(meta, f(vid)) for f in (
                            ks.extent_prefix, ks.journal_prefix, ks.kept_journal_prefix)])):
                    report.changed += 1
                else:
                    report.add("volume-leftovers",
                               f"volume {vid}: {self.pointers[vid]} record(s)")
        for vid in sorted(self.gone):
            report.add("volume-delete-pending", f"volume {vid}")


class _Listing:
    """One node's shards in stripe order, a page at a time; `None` once done or failed."""

    def __init__(self, nodes: NodeTransport, spec: NodeSpec, report: FsckReport) -> None:
        self.nodes, self.spec, self.report = nodes, spec, report
        self.page: list[tuple[bytes, int]] = []
        self.after = ""
        self.more = True
        self.listed = 0

    async def head(self) -> tuple[bytes, int] | None:
        while not self.page and self.more:
            try:
                ids = await self.nodes.list_shards(self.spec, after=self.after, limit=PAGE)
            except (StorageError, OSError) as exc:
                self.report.unreachable[self.spec.id] = str(exc) or type(exc).__name__
                self.more = False
                return None
            self.more = len(ids) == PAGE
            if ids:
                self.after = ids[-1]
            for sid in ids:
                try:
                    self.page.append(parse_shard_id(sid))
                except ValueError:
                    continue
            self.page.reverse()  # pop() from the end
        return self.page[-1] if self.page else None

    async def take(self, stripe: bytes) -> list[int]:
        """The indexes of `stripe` this node lists (it is at or past the head)."""
        got = []
        while (h := await self.head()) is not None and h[0] == stripe:
            got.append(self.page.pop()[1])
            self.listed += 1
        return got


async def _fresh_copies(nodes: NodeTransport, specs: dict[str, NodeSpec], stripe: bytes,
                        names: set[str], report: FsckReport) -> tuple[set[tuple[int, str]],
                                                                      set[str]]:
    """The copies of `stripe` on nodes `names` as they list them now; the nodes that failed."""
    have: set[tuple[int, str]] = set()
    failed: set[str] = set()
    hexid = stripe.hex()
    for n in sorted(names):
        if n not in specs or n in report.unreachable:
            failed.add(n)
            continue
        try:
            ids = await nodes.list_shards(specs[n], after=hexid, limit=64)
        except (StorageError, OSError) as exc:
            report.unreachable[n] = str(exc) or type(exc).__name__
            failed.add(n)
            continue
        for sid in ids:
            if not sid.startswith(hexid + "."):
                break
            have.add((parse_shard_id(sid)[1], n))
    return have, failed


class _Stripes:
    """Pass 2: the `X` entries and the nodes' listings merged in stripe order."""

    def __init__(self, meta: MetadataStore, nodes: NodeTransport, specs: Sequence[NodeSpec],
                 records: _Records, report: FsckReport) -> None:
        self.meta, self.nodes, self.records, self.report = meta, nodes, records, report
        self.specs = {s.id: s for s in specs}
        self.lists = [_Listing(nodes, s, report) for s in specs]
        self.indexed = 0

    async def _manifest(self, stripe: bytes) -> Manifest | None | str:
        try:
            return await load_manifest(self.meta, stripe)
        except (KeyError, ValueError, TypeError):
            return "undecodable"

    async def run(self, progress: Progress | None) -> None:
        xs = _pages(self.meta, *ks.space(ks.STRIPE))
        x = await anext(xs, None)
        done = 0
        while True:
            heads = [h[0] for h in [await li.head() for li in self.lists] if h is not None]
            if x is not None:
                heads.append(bytes.fromhex(ks.unpack(x.key)[1]))
            if not heads:
                return
            stripe = min(heads)
            copies = {(i, li.spec.id) for li in self.lists for i in await li.take(stripe)}
            here = None
            if x is not None and bytes.fromhex(ks.unpack(x.key)[1]) == stripe:
                here, x = x, await anext(xs, None)
            await self.check(stripe, here, copies)
            done += 1
            if progress and done % PAGE == 0:
                progress("stripes", done)

    async def check(self, stripe: bytes, x: Item | None, copies: set[tuple[int, str]]) -> None:
        report = self.report
        if x is None:
            if copies and stripe not in self.records.queued \
                    and stripe not in self.records.unindexed:
                report.add("orphan-shards", f"stripe {stripe.hex()}: {len(copies)} shard(s)")
            return
        self.indexed += 1
        man = await self._manifest(stripe)
        if man is None:  # the entry went since the merge read it
            report.changed += 1
        elif man in ("gone", "undecodable"):
            again = await self.meta.get(x.key)
            if again is None or again.revision != x.revision:
                report.changed += 1
            elif not isinstance(man := await self._manifest(stripe), Manifest):
                if stripe in self.records.retiring:  # in progress (`retiring`), not damage
                    report.add("retirement-pending", f"stripe {stripe.hex()}: its version "
                               "is removed, its index entry goes with the marker's steps")
                else:
                    report.add("dangling-index", f"stripe {stripe.hex()}")
                return
        if man == "staging":  # an archive copy indexed ahead of its swap (archive_staging)
            report.add("archive-staging", f"stripe {stripe.hex()}: staged for an archive "
                       "copy not swapped in yet (the swap, or the reclaim worker, settles it)")
        if not isinstance(man, Manifest):
            return  # gone meanwhile, or a state whose copies are not kept (archived, ...)
        await self.copies(stripe, man, copies)

    async def copies(self, stripe: bytes, man: Manifest, copies: set[tuple[int, str]],
                     fresh: bool = False) -> None:
        named = [(i, n) for i, n in enumerate(man.part.nodes) if n]
        present = sum(1 for c in named if c in copies)
        down = [c for c in named if c not in copies and c[1] in self.report.unreachable]
        k, total = man.part.k, len(man.part.nodes)
        where = _where(man)
        if k and present < k and not fresh:  # a move or a rewrite in flight? read it again
            again = await self._manifest(stripe)
            if not isinstance(again, Manifest):
                self.report.changed += 1
                return
            have, _ = await _fresh_copies(self.nodes, self.specs, stripe,
                                          {n for _, n in named} | {
                                              n for n in again.part.nodes if n}, self.report)
            return await self.copies(stripe, again, have, fresh=True)
        self.report.unchecked_copies += len(down)
        if k and present < k and present + len(down) >= k:
            self.report.unchecked_stripes += 1
        elif k and present < k:
            self.report.add("unreadable", f"stripe {stripe.hex()} of {where}: {present} of "
                                          f"{total} copies, {k} needed")
        elif present + len(down) < total:
            self.report.add("degraded", f"stripe {stripe.hex()} of {where}: {present} of "
                                        f"{total} copies")


def _where(man: Manifest) -> str:
    """What names a manifest's stripe, for the report."""
    key = ks.unpack(man.items[0].key)
    if man.kind == "extent":
        return f"volume {key[1]} {'extent' if key[0] == ks.EXTENT else 'journal'}"
    if man.kind == "part":
        return f"upload {key[1]} part {key[2]}"
    name = f"{key[1]}/{key[2]}@{ObjectVersion.decode(man.items[0].value).version_id}"
    return f"restored copy of {name}" if man.kind == "restored" else name


async def fsck(meta: MetadataStore, nodes: NodeTransport, specs: Sequence[NodeSpec],
               progress: Progress | None = None) -> FsckReport:
    """Check every record and every node's shards (module docstring)."""
    report = FsckReport()
    records = _Records(meta, report)
    done = 0
    async for it in _pages(meta, b"", b"\xff"):
        try:
            await records.record(it)
        except Exception as exc:  # noqa: BLE001 - a record that does not decode is a finding
            again = await meta.get(it.key)
            if again is None or again.value != it.value:
                report.changed += 1
            else:
                report.add("undecodable", f"{it.key!r}: {exc!r}")
        done += 1
        if progress and done % PAGE == 0:
            progress("records", done)
    await records.finish()
    stripes = _Stripes(meta, nodes, specs, records, report)
    await stripes.run(progress)
    report.counts = {"records": sum(records.counts.values()),
                     "object versions": records.counts[ks.OBJECT] + records.counts[ks.VERSION],
                     "stripes indexed": stripes.indexed, "nodes": len(specs),
                     "nodes unreachable": len(report.unreachable),
                     "shards listed": sum(li.listed for li in stripes.lists)}
    if records.legacy:
        report.counts["extents without index entry (copies not checked)"] = records.legacy
    return report
