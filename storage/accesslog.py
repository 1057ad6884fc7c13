"""Server access logs: a request's record, its line in AWS's format, and where records wait.

A record (`AccessRecord`) is made by the S3 gateway at the end of every request that names a
bucket. `AccessLogBuffer.add` only appends it to a bounded in-memory queue (the request path
pays nothing else); `AccessLogBuffer.stage` (every `stage_interval_s`, and once more on a
clean shutdown) keeps the records of buckets whose logging is enabled, formats each as AWS's
space-separated line, and writes one batch record per source bucket to the metadata store
under `(AL, bucket, staged ns, batch id)`, with the bucket's logging configuration as it was
then. The delivery worker (`storage/workers/accesslog.py`, under a lease) turns the batches
into log objects in the target bucket.

Guarantee (AWS calls its own delivery best effort): a record reaches the metadata store at
most `stage_interval_s` after its request ended; from there it survives any restart and is
delivered once (a retried delivery rewrites the same log object). A gateway that crashes loses the records of its last
`stage_interval_s`; a clean shutdown stages everything first. Records past `max_buffered`
(the metadata store not keeping up) are dropped and counted in `dropped`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from storage.errors import NotFound
from storage.keyspace import access_log_key
from storage.metadata import Txn
from storage.records import pack
from storage.telemetry import ACCESS_LOG_COUNTS

if TYPE_CHECKING:
    from storage.cluster import Cluster

log = logging.getLogger("tessera.accesslog")

BATCH_FORMAT_VERSION = 1
MAX_BATCH_LINES = 2000  # lines per staged record (keeps records small, etcd's limit too)


@dataclass
class AccessRecord:
    """One request, in the order and meaning of AWS's server access log fields
    (the bucket owner is filled in when the record is staged)."""

    bucket: str
    time: float  # when the request was received (epoch seconds)
    remote_ip: str
    requester: str  # canonical id, or "-" when anonymous
    request_id: str
    operation: str  # REST.PUT.OBJECT ...
    key: str  # URL-encoded key, or "-"
    request_uri: str  # "GET /bucket/key?x HTTP/1.1" (without the quotes)
    status: int
    error_code: str
    bytes_sent: int
    object_size: int | None
    total_ms: int
    turnaround_ms: int | None
    referer: str
    user_agent: str
    version_id: str
    host_id: str
    signature_version: str  # SigV4, SigV2 or "-"
    cipher_suite: str
    auth_type: str  # AuthHeader, QueryString or "-"
    host_header: str
    tls_version: str
    access_point_arn: str
    acl_required: bool


def _dash(v: object) -> str:
    s = "" if v is None else str(v)
    return s if s else "-"


def _printable(s: str) -> str:
    """`s` with what a client sent that is not printable UTF-8 (a header's raw \\xff byte,
    arrived surrogate-escaped; a tab, NEL or line separator) written as \\xNN / \\uNNNN, so
    no request can split a log line or fail the encoding of its batch (and so lose it)."""
    if s.isprintable():
        return s
    try:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no byte decoded to
        s = s.encode("utf-8", "backslashreplace").decode("ascii")
    return "".join(c if c.isprintable() else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in s)


def _quoted(v: str) -> str:
    return '"' + _printable((v or "-").replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _word(v: object) -> str:
    """A field that must stay one space-free token."""
    return _printable(_dash(v)).replace(" ", "%20")


def format_line(r: AccessRecord, owner_id: str) -> str:
    """The record as one line of AWS's server access log format (26 fields)."""
    when = datetime.fromtimestamp(r.time, UTC).strftime("[%d/%b/%Y:%H:%M:%S +0000]")
    fields = [
        _word(owner_id), _word(r.bucket), when, _word(r.remote_ip), _word(r.requester),
        _word(r.request_id), _word(r.operation), _word(r.key), _quoted(r.request_uri),
        str(r.status), _word(r.error_code), _word(r.bytes_sent or None),
        _word(r.object_size), str(r.total_ms), _word(r.turnaround_ms), _quoted(r.referer),
        _quoted(r.user_agent), _word(r.version_id), _word(r.host_id),
        _word(r.signature_version), _word(r.cipher_suite), _word(r.auth_type),
        _word(r.host_header), _word(r.tls_version), _word(r.access_point_arn),
        "Yes" if r.acl_required else "-",
    ]
    return " ".join(fields)


class AccessLogBuffer:
    """A gateway's records waiting to be staged (see the module docstring)."""

    def __init__(self, cluster: Cluster, max_buffered: int) -> None:
        self._cluster = cluster
        self._max = max_buffered
        self._queue: deque[AccessRecord] = deque()
        self.dropped = 0
        self.staged = 0

    def add(self, record: AccessRecord) -> None:
        """Queue one record (called at the end of every request; never blocks)."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            ACCESS_LOG_COUNTS.add("dropped_buffer_full")
            if self.dropped % 1000 == 1:
                log.warning("access log: buffer full (%d records); %d records dropped so far",
                            self._max, self.dropped)
            return
        self._queue.append(record)

    def __len__(self) -> int:
        return len(self._queue)

    async def stage(self) -> int:
        """Write the queued records of logged buckets to the metadata store; the count."""
        if not self._queue:
            return 0
        records = list(self._queue)
        self._queue.clear()
        by_bucket: dict[str, list[AccessRecord]] = {}
        for r in records:
            by_bucket.setdefault(r.bucket, []).append(r)
        written = 0
        for bucket, recs in by_bucket.items():
            try:
                written += await self._stage_bucket(bucket, recs)
            except Exception:  # noqa: BLE001 - one bucket's trouble must not lose the others
                log.exception("access log: cannot stage %d records of %s", len(recs), bucket)
        self.staged += written
        ACCESS_LOG_COUNTS.add("staged", written)
        return written

    async def _stage_bucket(self, bucket: str, recs: list[AccessRecord]) -> int:
        try:
            b = await self._cluster.buckets.get_any(bucket)
        except NotFound:
            return 0
        conf = b.config.get("logging")
        if not conf:
            return 0
        recs = [r for r in recs if r.time >= float(conf.get("since", 0.0))]
        if not recs:
            return 0
        owner_id, _ = await self._cluster.tenants.identity(b.tenant)
        now = time.time_ns()
        puts: dict[bytes, bytes] = {}
        for i in range(0, len(recs), MAX_BATCH_LINES):
            chunk = recs[i:i + MAX_BATCH_LINES]
            value = {"fv": BATCH_FORMAT_VERSION, "source_tenant": b.tenant,
                     "source_owner_id": owner_id, "region": b.region, "logging": conf,
                     "first": chunk[0].time, "staged": now / 1e9,
                     "lines": [format_line(r, owner_id) for r in chunk]}
            puts[access_log_key(bucket, now, secrets.token_hex(8))] = pack(value)
        await self._cluster.meta.txn(Txn(puts=puts))
        return len(recs)
