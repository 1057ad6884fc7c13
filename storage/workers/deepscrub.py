"""Deep scrub: check every shard against the authenticated plaintext, where the keys are.

A node's scrubber checks frame checksums only, so a shard with valid checksums but wrong
bytes (a lying shard) passes it. This worker runs in the gateway (under the lease
`(L, deepscrub)`, like the other workers), walks the stripe index `X`, reads every shard of
each live stripe at a bounded byte rate (`[gateway] deep_scrub_rate_mbps`, or
its environment override; 0 = off) and, per segment, decodes and authenticates it and
re-encodes it: a shard whose block differs from the authenticated codeword lies
(`StripeCodec.audit`). Findings go to `LyingShards` (quarantine on the node, urgent repair,
counters). Block-volume extents and journal segments are checked with the data key their
record wraps (`storage/volume_stripe_keys.py`). Where the cluster holds no key (SSE-C
objects) the reference is the codeword k+1 shards agree on. After a full pass it rests
`deep_scrub_pause_s`. Every stripe looked at costs at least STRIPE_FLOOR_BYTES of the rate
(a manifest load and k+m reads cost CPU however small the stripe): a million small or empty
objects are scrubbed at a bounded stripe rate, not at full speed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from typing import Any

from storage.archive_classes import readable
from storage.config import Config, NodeSpec
from storage.datakeys import SSEC_HMAC
from storage.erasure import ErasureCodec
from storage.errors import IntegrityError, KeyUnavailable, NotFound, StorageError
from storage.health import HealthTracker
from storage.keyspace import STRIPE, next_key, space, stripe_of
from storage.lying import LyingShards, read_integrity, update_integrity
from storage.metadata import Item, MetadataStore
from storage.multipart_records import Upload
from storage.objects import ObjectService
from storage.pipeline import StripeCodec, segment_count, segment_length, shard_file_bytes
from storage.records import ObjectVersion, unpack
from storage.shards.client import SMALL_SHARD_BYTES
from storage.shards.ids import shard_id
from storage.shards.transport import NodeTransport
from storage.throttle import Throttle
from storage.volume_stripe_keys import VolumeTenants, volume_stripe_codec
from storage.workers import WorkerState
from storage.workers.manifests import KEPT_STATES, Manifest, load_manifest

log = logging.getLogger("tessera.deepscrub")
MIB = 2**20
BATCH = 8  # stripes per step
STRIPE_FLOOR_BYTES = 64 * 1024  # of the byte rate charged per stripe (4 MiB/s: 64 a second)
PUBLISH_S = 5.0  # progress is written at most this often (and at each pass end)
CHUNK_SEGMENTS = 4  # segments read per shard request (memory: (k+m) x 4 blocks)


@dataclass(frozen=True)
class DeepScrubSettings:
    rate_bytes_s: float = 4 * MIB
    pause_s: float = 3600.0

    @classmethod
    def from_config(cls, cfg: Config) -> DeepScrubSettings:
        return cls(rate_bytes_s=cfg.gateway.deep_scrub_rate_mbps * MIB,
                   pause_s=cfg.gateway.deep_scrub_pause_s)


@dataclass
class DeepScrubStats:
    """Published in `(S, integrity)` under `deep_scrub` (cumulative across gateways)."""

    passes: int = 0
    stripes_checked: int = 0
    bytes_checked: int = 0
    lying_found: int = 0
    unverifiable: int = 0  # segments with no authenticating (or k+1-supported) codeword
    pass_started: float = 0.0
    last_pass_end: float = 0.0


class DeepScrubber:
    name = "deepscrub"
    idle_s = 1.0

    def __init__(self, cfg: Config, meta: MetadataStore, objects: ObjectService,
                 client: NodeTransport, health: HealthTracker, cpu: Executor, lies: LyingShards,
                 settings: DeepScrubSettings | None = None) -> None:
        self.settings = settings or DeepScrubSettings.from_config(cfg)
        self._meta = meta
        self._objects = objects
        self._client = client
        self._health = health
        self._cpu = cpu
        self._lies = lies
        self._volumes = VolumeTenants(meta)
        self._throttle = Throttle(self.settings.rate_bytes_s)
        self._cursor = space(STRIPE)[0]
        self._next_pass = 0.0
        self.stats = DeepScrubStats()
        self._loaded = False
        # monotonic time of the last progress write; none yet, so the first step writes (a
        # 0.0 start skipped it while the machine had been up less than PUBLISH_S)
        self._published = float("-inf")

    async def step(self) -> WorkerState:
        if self.settings.rate_bytes_s <= 0 or time.monotonic() < self._next_pass:
            return WorkerState.IDLE
        if not self._loaded:
            old = (await read_integrity(self._meta)).get("deep_scrub") or {}
            known = set(DeepScrubStats.__dataclass_fields__)
            self.stats = DeepScrubStats(**{k: v for k, v in old.items() if k in known})
            self._loaded = True
        if self._cursor == space(STRIPE)[0]:
            self.stats.pass_started = time.time()
        items = await self._meta.range(self._cursor, space(STRIPE)[1], limit=BATCH)
        for item in items:
            await self._scrub_item(item)
        if len(items) < BATCH:
            self._cursor = space(STRIPE)[0]
            self.stats.passes += 1
            self.stats.last_pass_end = time.time()
            self._next_pass = time.monotonic() + self.settings.pause_s
        else:
            self._cursor = next_key(items[-1].key)
        if len(items) < BATCH or time.monotonic() - self._published >= PUBLISH_S:
            await self._publish()  # (a metadata write per 8-stripe step was ~7% idle CPU)
            self._published = time.monotonic()
        return WorkerState.BUSY if len(items) == BATCH else WorkerState.IDLE

    async def _publish(self) -> None:
        stats = asdict(self.stats)

        def put(doc: dict[str, Any]) -> None:
            doc["deep_scrub"] = stats

        await update_integrity(self._meta, put)

    async def _scrub_item(self, item: Item) -> None:
        if unpack(item.value).get("state") not in KEPT_STATES:
            return
        await self._throttle.consume(STRIPE_FLOOR_BYTES)
        stripe_id = stripe_of(item.key)
        man = await load_manifest(self._meta, stripe_id)
        if not isinstance(man, Manifest) or (not man.part.size or man.part.inline
                                              or man.part.body_ref):
            return
        codec = await self._codec(man)
        if codec is None:
            return
        try:
            await self.scrub_stripe(codec, man.part.nodes, man.part.size)
        except StorageError as exc:  # a node went away mid-stripe: next pass
            log.info("deep scrub of stripe %s stopped: %s", stripe_id.hex(), exc)
        self.stats.stripes_checked += 1

    async def check_stripe(self, stripe_id: bytes) -> list[int]:
        """Check one stripe now (repair asks when its sources disagree); the liars found."""
        man = await load_manifest(self._meta, stripe_id)
        if not isinstance(man, Manifest) or not man.part.size:
            return []
        codec = await self._codec(man)
        if codec is None:
            return []
        try:
            return await self.scrub_stripe(codec, man.part.nodes, man.part.size)
        except StorageError as exc:
            log.info("check of stripe %s stopped: %s", stripe_id.hex(), exc)
            return []

    async def codec(self, man: Manifest) -> StripeCodec | None:
        """The stripe's codec (repair's and rebalance's keyed checks): with its cipher where
        the cluster holds the key; cipher None for SSE-C; None when the key is gone
        (shredded) or the volume is. Any other StorageError (the metadata store or the KMS
        failed) is raised: the caller defers the stripe rather than rebuild it unchecked."""
        try:
            return await self._keyed_codec(man)
        except (KeyUnavailable, NotFound) as exc:  # shredded: nothing left to protect
            log.info("no key for stripe %s: %s", man.part.stripe_id.hex(), exc)
            return None

    async def _codec(self, man: Manifest) -> StripeCodec | None:
        """The scrub's own: `codec`, None (skipped this pass) on any error."""
        try:
            return await self.codec(man)
        except StorageError as exc:
            log.info("deep scrub: no key for stripe %s: %s", man.part.stripe_id.hex(), exc)
            return None

    async def _keyed_codec(self, man: Manifest) -> StripeCodec | None:
        """The stripe's codec: with the object's (the open upload's, the volume stripe's)
        cipher where the cluster has its key."""
        part = man.part
        if man.kind in ("object", "part", "restored"):
            v = ObjectVersion.decode(man.items[0].value) if man.kind != "part" else \
                Upload.decode(man.items[1].value).shell()
            if man.kind == "restored":  # the copy's own key and identity
                copy = readable(v)
                if copy is None or copy is v:
                    return None
                v = copy
            cipher = None
            if SSEC_HMAC not in v.sse:
                cipher = await self._objects.data_keys.cipher_for(v)
            return self._objects.codec_for(v, part, cipher)
        if man.kind == "extent":  # an extent or journal segment: its record wraps the key
            return await volume_stripe_codec(self._objects.tenants, self._volumes, man.items[0])
        return StripeCodec(cipher=None, codec=ErasureCodec(part.k, part.m), identity="",
                           part=part.number, stripe_id=part.stripe_id,
                           segment_size=part.segment_size)

    async def scrub_stripe(self, codec: StripeCodec, nodes: list[str | None], size: int,
                           ) -> list[int]:
        """Check every readable shard of one stripe, segment by segment; the liars found."""
        by_id = {n.id: n for n in self._health.nodes}
        shards = [(i, by_id[n]) for i, n in enumerate(nodes)
                  if n is not None and n in by_id and self._health.is_usable(n)]
        k = codec.codec.k
        if len(shards) <= k:  # no spare shard to compare with: repair's business first
            return []
        headers = codec.headers()
        nsegs = segment_count(size, codec.segment_size)
        small = shard_file_bytes(size, codec.segment_size, k) <= SMALL_SHARD_BYTES
        step = nsegs if small else CHUNK_SEGMENTS
        loop = asyncio.get_running_loop()
        liars: set[int] = set()

        async def fetch(i: int, node: NodeSpec, first: int, count: int,
                        ) -> list[tuple[int, bytes]] | None:
            sid = shard_id(codec.stripe_id, i)
            try:
                if small:
                    return await self._client.read_small(node, sid, headers[i], first, count)
                return [f async for f in self._client.read_frames(node, sid, headers[i],
                                                                  first, count)]
            except StorageError:
                return None  # missing or corrupt: the node scrubber and repair see to it

        for first in range(0, nsegs, step):
            count = min(step, nsegs - first)
            got = await asyncio.gather(*(fetch(i, n, first, count) for i, n in shards))
            for n in range(count):
                seg = first + n
                blocks = {i: frames[n][1] for (i, _), frames in zip(shards, got, strict=True)
                          if frames is not None and len(frames) == count}
                if len(blocks) <= k:
                    continue
                read = sum(len(b) for b in blocks.values())
                await self._throttle.consume(read)
                self.stats.bytes_checked += read
                plen = segment_length(size, codec.segment_size, seg)
                try:
                    wrong = await loop.run_in_executor(self._cpu, codec.audit, seg,
                                                       seg == nsegs - 1, plen, blocks)
                except IntegrityError as exc:
                    self.stats.unverifiable += 1
                    log.error("deep scrub: stripe %s: %s", codec.stripe_id.hex(), exc)
                    continue
                for i in wrong:
                    liars.add(i)
                    if self._lies.report(codec.stripe_id, i, dict(shards)[i], "scrub", seg):
                        self.stats.lying_found += 1
        return sorted(liars)


__all__ = ["DeepScrubSettings", "DeepScrubStats", "DeepScrubber"]
