"""The hand-built TxnRequest bytes of storage/metadata/etcd_wire.py are exactly what the
protobuf classes serialize for the same transaction, so etcd receives the same request as
before: every field, every length form (1- and 2+-byte varints), revision 0 (a oneof
member, still written), empty values, and nesting."""

from __future__ import annotations

import random

import pytest

from storage.metadata.etcd_wire import nested_request, txn_request, varint
from storage.metadata.etcdpb import etcd_wire_pb2 as pb


def _pb_txn(compares: dict[bytes, int], puts: dict[bytes, bytes], deletes: list[bytes],
            reads: list[bytes]) -> pb.TxnRequest:
    """The same transaction through the protobuf classes (as etcd_batch built it before)."""
    ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=v)) for k, v in puts.items()]
    ops += [pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k)) for k in deletes]
    return pb.TxnRequest(
        compare=[pb.Compare(key=k, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                            mod_revision=rev) for k, rev in compares.items()],
        success=ops,
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k)) for k in reads])


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**31, 2**63 - 1, -1, -2**63])
def test_varint_matches_protobuf_int64(n: int) -> None:
    assert b"\x30" + varint(n) == pb.Compare(mod_revision=n).SerializeToString()


def test_put_object_shaped_txn_is_byte_identical() -> None:
    okey, bkey, body = b"\x01O/b/k", b"\x01B/b", b"\xaa" * 4200
    args = ({okey: 0, bkey: 12345}, {okey: b"r" * 460, b"\x01IB/b/k/ref": body}, [],
            [okey, bkey])
    raw = txn_request(*args)
    assert raw == _pb_txn(*args).SerializeToString()
    parsed = pb.TxnRequest.FromString(raw)
    assert parsed.compare[0].HasField("mod_revision")  # revision 0 is sent: key absent
    assert parsed.compare[0].mod_revision == 0 and parsed.compare[1].mod_revision == 12345


def test_random_txns_are_byte_identical() -> None:
    rng = random.Random(12)
    for _ in range(300):
        def key() -> bytes:
            return rng.randbytes(rng.choice([1, 5, 126, 127, 128, 200]))
        compares = {key(): rng.choice([0, 1, 127, 128, 2**40]) for _ in range(rng.randrange(4))}
        puts = {key(): rng.randbytes(rng.choice([0, 1, 127, 128, 5000, 70_000]))
                for _ in range(rng.randrange(4))}
        deletes = [key() for _ in range(rng.randrange(3))]
        reads = [key() for _ in range(rng.randrange(3))]
        args = (compares, puts, deletes, reads)
        assert txn_request(*args) == _pb_txn(*args).SerializeToString()


def test_empty_key_and_value_as_protobuf_leaves_them_out() -> None:
    args = ({b"": 3}, {b"k": b"", b"": b"v"}, [b""], [b""])
    assert txn_request(*args) == _pb_txn(*args).SerializeToString()


def test_nested_request_is_byte_identical() -> None:
    members = [_pb_txn({b"a%d" % i: i}, {b"a%d" % i: b"x" * (i * 100)}, [], [b"a%d" % i])
               for i in range(5)]
    want = pb.TxnRequest(success=[pb.RequestOp(request_txn=m) for m in members])
    assert nested_request(m.SerializeToString() for m in members) == want.SerializeToString()
