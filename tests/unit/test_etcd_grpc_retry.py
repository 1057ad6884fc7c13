"""Which failed gRPC calls the etcd store sends to the next member (storage/metadata/
etcd_grpc.py `try_elsewhere`): a write only when it never left or no leader took it."""

from __future__ import annotations

import grpc
import pytest

from storage.metadata.etcd_grpc import target_of, try_elsewhere


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
