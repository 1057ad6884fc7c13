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
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import grpc

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
# etcd itself refuses requests over --max-request-bytes (1.5 MiB by default); answers (a
# listing page, a record with its inline bodies) may be bigger than grpc's 4 MiB default.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),  # a write is never sent twice behind our back
    # a member back after an outage is tried again within 2 s (grpc's default backs off to 120 s)
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # a connection that went silent (a zone cut off) is found by pings while calls wait on it;
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time)
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


def target_of(endpoint: str) -> str:
    """'host:port' of an 'http://host:port' endpoint (gRPC shares etcd's client port)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    return parts.netloc


def never_sent(exc: grpc.RpcError) -> bool:
    """The call failed before any byte of it reached a member (no connection could be made):
    safe to send elsewhere, a write too."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and \
        "failed to connect" in (exc.details() or "").lower()


def try_elsewhere(exc: grpc.RpcError, idempotent: bool) -> bool:
    """Whether a failed call may go to the next member: a read that found the member
    unreachable, leaderless or slow; a write only when it was never sent or the member
    refused it for having no leader (it proposed nothing)."""
    code, details = exc.code(), exc.details() or ""
    if never_sent(exc) or (code == grpc.StatusCode.UNAVAILABLE and "no leader" in details):
        return True
    return idempotent and code in (grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.DEADLINE_EXCEEDED)


class GrpcKV:
    """One gRPC channel per etcd member, opened on first use; `call` awaits one unary RPC."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self._targets = [target_of(e) for e in endpoints]
        self._tls = [e.startswith("https://") for e in endpoints]  # as aiohttp did: system CAs
        self._channels: dict[int, grpc.Channel] = {}
        self._calls: dict[tuple[int, str], grpc.UnaryUnaryMultiCallable] = {}

    def _callable(self, idx: int, rpc: str) -> grpc.UnaryUnaryMultiCallable:
        found = self._calls.get((idx, rpc))
        if found is None:
            channel = self._channels.get(idx)
            if channel is None:
                channel = (grpc.secure_channel(self._targets[idx], grpc.ssl_channel_credentials(),
                                               options=CHANNEL_OPTIONS) if self._tls[idx]
                           else grpc.insecure_channel(self._targets[idx], options=CHANNEL_OPTIONS))
                self._channels[idx] = channel
            path, req, resp = RPCS[rpc]
            found = channel.unary_unary(path, request_serializer=req.SerializeToString,
                                        response_deserializer=resp.FromString)
            self._calls[(idx, rpc)] = found
        return found

    async def call(self, idx: int, rpc: str, request: Any, timeout_s: float) -> Any:
        """Send `request` to member `idx`; its answer, or the grpc.RpcError it failed with.
        A cancelled caller cancels the call (a write may still have applied, as ever)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        pending = self._callable(idx, rpc).future(request, timeout=timeout_s)

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
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._calls.clear()
