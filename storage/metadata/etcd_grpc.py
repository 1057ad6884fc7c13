"""etcd's KV service over gRPC (grpcio: HTTP/2 + protobuf), the metadata store's hot path.

etcd 3.x serves its JSON gateway by decoding the JSON and calling its own gRPC server over
an internal loopback connection: a second hop, a JSON scan of every base64'd value and a
re-encoding of every answer, inside each member we call. Measured against a 3-member
cluster (benchmarks/README.md, session 10), the members' CPU per PutObject-shaped Txn fell
~45% and per 1,000-key range ~4.7x by calling gRPC directly. The messages are Tessera's own
description of the fields it uses (storage/metadata/etcdpb/etcd_wire.proto, etcd's field
numbers); the RPC paths are etcd's.

grpcio's blocking channel is used, each call started with `.future()` and its answer handed
to the event loop with `call_soon_threadsafe`: no thread per call, and no grpc.aio (whose
poller thread hung a test run in session 3 when the garbage collector joined it).

grpcio polls a channel's answers on a thread that it starts when the channel's first call
begins and ends when its last call ends. Batched calls (one Txn, one read in flight) leave
the channel idle between answers, so nearly every call started a thread (~65 us of the
~270 us a call cost the gateway, measured on one member). Each channel therefore holds one
call open: a Watch stream that asks for nothing, so etcd sends nothing on it (`Keeper`).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from storage.metadata.etcd_tls import EtcdClientTLS
from storage.metadata.etcdpb import etcd_wire_pb2 as pb

# RPC name -> (its path, the request type, the response type)
RPCS: dict[str, tuple[str, Any, Any]] = {
    "Range": ("/etcdserverpb.KV/Range", pb.RangeRequest, pb.RangeResponse),
    "Put": ("/etcdserverpb.KV/Put", pb.PutRequest, pb.PutResponse),
    "DeleteRange": ("/etcdserverpb.KV/DeleteRange", pb.DeleteRangeRequest,
                    pb.DeleteRangeResponse),
    "Txn": ("/etcdserverpb.KV/Txn", pb.TxnRequest, pb.TxnResponse),
    "Compact": ("/etcdserverpb.KV/Compact", pb.CompactionRequest, pb.CompactionResponse),
}
# each call's deadline; grpc sends it with the request, and the member drops a request
# still unproposed by then (one already proposed to Raft applies when Raft commits it, as
# for any etcd client)
REQUEST_TIMEOUT_S = 10.0
# etcd itself refuses requests over --max-request-bytes (1.5 MiB by default); answers (a
# listing page, a record with its inline bodies) may be bigger than grpc's 4 MiB default.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),  # a write is never sent twice behind our back
    # http_proxy/https_proxy/grpc_proxy in the environment would route every key call (object
    # records, wrapped tenant keys) through a proxy; the JSON gateway's aiohttp never did
    ("grpc.enable_http_proxy", 0),
    # a member back after an outage is tried again within 2 s (grpc's default backs off to
    # 120 s); a connection attempt gives up after 2 s, as aiohttp's connect timeout did, so
    # calls queued on an unreachable member fail as never sent instead of at their deadline
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # a connection that went silent (a zone cut off) is found by pings while calls wait on it;
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time)
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 2_000),
]


# the call held open on each channel (etcd's Watch: open until we end it, silent without
# a create request), and how soon one that ended (its member restarted) is opened again
KEEPER_PATH = "/etcdserverpb.Watch/Watch"
KEEPER_RETRY_S = 1.0


def serialize(request: Any) -> bytes:
    """A request message's wire bytes; bytes pass as they are (a commit's TxnRequest,
    encoded by storage/metadata/etcd_wire.py)."""
    if type(request) is bytes:
        return request
    return request.SerializeToString()  # type: ignore[no-any-return]


def target_of(endpoint: str) -> str:
    """'host:port' of an 'http://host:port' endpoint (gRPC shares etcd's client port)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    return parts.netloc


def trusted_roots() -> bytes | None:
    """The CA certificates an https member is checked against: the same store Python's ssl
    (and so aiohttp, for leases and watches) uses, SSL_CERT_FILE included. grpcio would
    otherwise use its own bundled roots and refuse a private CA the JSON gateway accepts."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file():
        return Path(cafile).read_bytes()
    return None  # no bundle file: grpcio's own roots


def never_sent(exc: grpc.RpcError) -> bool:
    """The call failed before any byte of it reached a member (no connection could be made):
    safe to send elsewhere, a write too."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and \
        "failed to connect" in (exc.details() or "").lower()


def member_unwell(exc: grpc.RpcError) -> bool:
    """The member did not answer in time or could not be reached: a write that failed so is
    not sent again, but the calls after it go to the next member (on a cut-off link the
    connection looks open until keep-alive pings fail, and each call would wait its whole
    deadline there)."""
    return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def try_elsewhere(exc: grpc.RpcError, idempotent: bool) -> bool:
    """Whether a failed call may go to the next member: a read that found the member
    unreachable, leaderless or slow; a write only when it was never sent or the member
    refused it for having no leader (it proposed nothing)."""
    code, details = exc.code(), exc.details() or ""
    if never_sent(exc) or (code == grpc.StatusCode.UNAVAILABLE and "no leader" in details):
        return True
    return idempotent and code in (grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.DEADLINE_EXCEEDED)


class Keeper:
    """One Watch stream held open on a channel, so grpcio's polling thread for the channel
    stays up between our calls instead of being started anew for nearly every call.

    The stream sends no request: its request iterator waits on `_ended` (grpcio consumes it
    on a thread of its own), which is set when the stream ends (a broken connection, the
    member stopping) or is closed, so no thread outlives its stream."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._ended = threading.Event()
        self.opened = time.monotonic()
        stream = channel.stream_stream(KEEPER_PATH, request_serializer=serialize,
                                       response_deserializer=bytes)
        self._call = stream(self._nothing())
        self._call.add_done_callback(lambda _: self._ended.set())

    def _nothing(self) -> Iterator[bytes]:
        self._ended.wait()
        return
        yield b""  # (a generator: grpcio takes the requests from an iterator)

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    def close(self) -> None:
        self._ended.set()
        self._call.cancel()


def end_keepers(keepers: dict[int, Keeper]) -> None:
    """Close every held call (on close, or when the client is collected unclosed)."""
    for keeper in keepers.values():
        keeper.close()
    keepers.clear()


class GrpcKV:
    """One gRPC channel per etcd member, opened on first use, each holding one idle call
    open (`Keeper`); `call` awaits one unary RPC."""

    def __init__(self, endpoints: tuple[str, ...], tls: EtcdClientTLS | None = None) -> None:
        self._targets = [target_of(e) for e in endpoints]
        self._tls = [e.startswith("https://") for e in endpoints]
        # our client certificate and the cluster's CA (mutual TLS), else the CA store only
        self._creds = (tls.grpc_credentials() if tls is not None else
                       grpc.ssl_channel_credentials(trusted_roots()) if any(self._tls) else None)
        self._closed = False
        self._channels: dict[int, grpc.Channel] = {}
        self._calls: dict[tuple[int, str], grpc.UnaryUnaryMultiCallable] = {}
        self._keepers: dict[int, Keeper] = {}
        # a client dropped unclosed ends its held calls: each one's thread would otherwise
        # wait for ever, keeping its channel, connection and Watch stream alive
        self._end_keepers = weakref.finalize(self, end_keepers, self._keepers)

    def _callable(self, idx: int, rpc: str) -> grpc.UnaryUnaryMultiCallable:
        found = self._calls.get((idx, rpc))
        if found is None:
            if self._closed:  # a late call (a renewal during shutdown) opens nothing new
                raise RuntimeError("etcd store is closed")
            channel = self._channels.get(idx)
            if channel is None:
                channel = (grpc.secure_channel(self._targets[idx], self._creds,
                                               options=CHANNEL_OPTIONS)
                           if self._tls[idx] and self._creds is not None
                           else grpc.insecure_channel(self._targets[idx], options=CHANNEL_OPTIONS))
                self._channels[idx] = channel
                self._keepers[idx] = Keeper(channel)
            path, _, resp = RPCS[rpc]
            found = channel.unary_unary(path, request_serializer=serialize,
                                        response_deserializer=resp.FromString)
            self._calls[(idx, rpc)] = found
        return found

    async def call(self, idx: int, rpc: str, request: Any, timeout_s: float) -> Any:
        """Send `request` (a message, or its serialized bytes) to member `idx`; its answer,
        or the grpc.RpcError it failed with. A cancelled caller cancels the call (a write may still have applied, as ever)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        pending = self._callable(idx, rpc).future(request, timeout=timeout_s)
        keeper = self._keepers[idx]
        if not keeper.alive and time.monotonic() - keeper.opened >= KEEPER_RETRY_S:
            keeper.close()  # (after the call began: the polling thread stays up meanwhile)
            self._keepers[idx] = Keeper(self._channels[idx])

        def settle(done: grpc.Future) -> None:
            if answer.done():
                return
            error = done.exception()
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(done.result())

        def handoff(done: grpc.Future) -> None:  # on a grpc thread, or here if done already
            try:
                loop.call_soon_threadsafe(settle, done)
            except RuntimeError:  # the loop closed meanwhile: no one waits for the answer
                pass

        pending.add_done_callback(handoff)
        try:
            return await answer
        except asyncio.CancelledError:
            pending.cancel()
            raise

    def close(self) -> None:
        self._closed = True
        self._end_keepers()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._calls.clear()
