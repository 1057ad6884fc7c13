"""Which failed gRPC calls the etcd store sends to the next member (storage/metadata/
etcd_grpc.py `try_elsewhere`): a write only when it never left or no leader took it; and
after a write that a member left unanswered, the next call goes elsewhere."""

from __future__ import annotations

import grpc
import pytest

from storage.metadata.etcd import EtcdError, EtcdStore
from storage.metadata.etcd_grpc import target_of, try_elsewhere
from storage.metadata.etcdpb import etcd_wire_pb2 as pb


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


REFUSED = Failed(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: "
                 "UNKNOWN: ipv4:127.0.2.10:2379: Failed to connect to remote host: "
                 "Connection refused")
BROKEN = Failed(grpc.StatusCode.UNAVAILABLE, "Socket closed")
NO_LEADER = Failed(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
SLOW = Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
TOO_MANY = Failed(grpc.StatusCode.INVALID_ARGUMENT,
                  "etcdserver: too many operations in txn request")


@pytest.mark.parametrize(("error", "write", "read"), [
    (REFUSED, True, True),
    (NO_LEADER, True, True),
    (BROKEN, False, True),  # the write may have applied: the caller sees the error
    (SLOW, False, True),
    (TOO_MANY, False, False),
])
def test_which_failures_go_to_the_next_member(error: Failed, write: bool, read: bool) -> None:
    assert try_elsewhere(error, idempotent=False) is write
    assert try_elsewhere(error, idempotent=True) is read


def test_target_of_an_endpoint() -> None:
    assert target_of("http://127.0.1.10:2379") == "127.0.1.10:2379"
    assert target_of("127.0.1.10:2379") == "127.0.1.10:2379"


class FakeKV:
    """Member 0 lets every call run into its deadline (a cut-off link); member 1 answers."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def call(self, idx: int, rpc: str, request: object, timeout_s: float) -> object:
        self.sent.append(idx)
        if idx == 0:
            raise SLOW
        return pb.PutResponse(header=pb.ResponseHeader(revision=7))

    def close(self) -> None:
        pass


async def test_after_a_write_ran_out_of_time_the_next_call_goes_to_the_next_member() -> None:
    """The failed write is not sent again (it may have applied), but the store does not keep
    sending to a member that stopped answering."""
    store = EtcdStore(("http://127.0.1.10:2379", "http://127.0.2.10:2379"), None, "/v3")  # type: ignore[arg-type]
    looked: list[bool] = []
    store._relook = lambda: looked.append(True)  # type: ignore[method-assign]
    store._kv = FakeKV()  # type: ignore[assignment]
    with pytest.raises(EtcdError, match="DEADLINE_EXCEEDED"):
        await store.put(b"k", b"v")
    assert store._kv.sent == [0] and looked == [True]
    assert store.endpoint == "http://127.0.2.10:2379"
    assert await store.put(b"k", b"v") == 7
    assert store._kv.sent == [0, 1]


def test_a_call_after_close_opens_no_channel() -> None:
    """A late call (a lease renewal during shutdown) fails as aiohttp's closed session did,
    instead of opening a channel and thread nothing will close."""
    from storage.metadata.etcd_grpc import GrpcKV

    kv = GrpcKV(("http://127.0.0.1:9",))
    kv.close()
    with pytest.raises(RuntimeError, match="closed"):
        kv._callable(0, "Range")
    assert kv._channels == {}
