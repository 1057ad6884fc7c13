"""etcd TxnRequests encoded straight to protobuf wire bytes, for the commit path.

Every PutObject on etcd is one caller's Txn (compares, puts and deletes, failure reads),
nested with its concurrent peers in one request (storage/metadata/etcd_batch.py). Building
it from protobuf message objects (a Compare, a RequestOp and a PutRequest per key, then a
copy of each caller's TxnRequest into the nesting one) cost the gateway ~70 us per caller
under load (py-spy: 8% of a gateway worker's samples in a 4 KiB PUT run). The bytes below
are what `etcd_wire_pb2` serializes for the same messages (field numbers from
storage/metadata/etcdpb/etcd_wire.proto, fields in number order, proto3 defaults left
out; tests/unit/test_etcd_wire.py checks byte equality), built with a few concatenations.
"""

from __future__ import annotations

from collections.abc import Iterable

# one-byte varints, the common case for field lengths under 128 and small revisions
_SMALL = [bytes((i,)) for i in range(0x80)]

# tags: (field number << 3) | wire type (0 varint, 2 length-delimited)
_TXN_COMPARE, _TXN_SUCCESS, _TXN_FAILURE = b"\x0a", b"\x12", b"\x1a"
_OP_RANGE, _OP_PUT, _OP_DELETE, _OP_TXN = b"\x0a", b"\x12", b"\x1a", b"\x22"
_KEY, _VALUE = b"\x0a", b"\x12"  # RangeRequest / PutRequest / DeleteRangeRequest fields 1, 2
# Compare: result EQUAL (0, the default: not written), target MOD (field 2 = 2), then
# the key (field 3) and mod_revision (field 6, a oneof member: written even when 0)
_CMP_MOD = b"\x10\x02"
_CMP_KEY, _CMP_MOD_REVISION = b"\x1a", b"\x30"


def varint(n: int) -> bytes:
    """Protobuf base-128 varint; a negative int64 as its 10-byte two's complement."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _head(tag: bytes, n: int) -> bytes:
    """The tag and length of a length-delimited field of `n` bytes."""
    return tag + (_SMALL[n] if n < 0x80 else varint(n))


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field (small ones: copying `data` here is cheap)."""
    return _head(tag, len(data)) + data


def _key_only(key: bytes) -> bytes:
    """A RangeRequest or DeleteRangeRequest of one key (field 1; proto3 omits it empty)."""
    return _field(_KEY, key) if key else b""


def txn_request(compares: dict[bytes, int], puts: dict[bytes, bytes],
                deletes: Iterable[bytes], reads: Iterable[bytes]) -> bytes:
    """TxnRequest{compare: key's mod_revision == rev for each of `compares`; success: put
    each of `puts`, then delete each of `deletes`; failure: range each of `reads`}.
    Values are copied once, by the final join."""
    out = [_field(_TXN_COMPARE, _CMP_MOD + (_field(_CMP_KEY, k) if k else b"")
                  + _CMP_MOD_REVISION + varint(rev))
           for k, rev in compares.items()]
    for k, v in puts.items():
        key = _field(_KEY, k) if k else b""
        value = _head(_VALUE, len(v)) if v else b""
        put = len(key) + len(value) + len(v)
        op = _head(_OP_PUT, put)
        out += (_head(_TXN_SUCCESS, len(op) + put), op, key, value, v)
    out += [_field(_TXN_SUCCESS, _field(_OP_DELETE, _key_only(k))) for k in deletes]
    out += [_field(_TXN_FAILURE, _field(_OP_RANGE, _key_only(k))) for k in reads]
    return b"".join(out)


def nested_request(bodies: Iterable[bytes]) -> bytes:
    """TxnRequest{success: [RequestOp{request_txn: body} for each body]}: callers' own
    TxnRequests nested in one, with no compare of its own (each body copied once)."""
    out: list[bytes] = []
    for b in bodies:
        op = _head(_OP_TXN, len(b))
        out += (_head(_TXN_SUCCESS, len(op) + len(b)), op, b)
    return b"".join(out)
