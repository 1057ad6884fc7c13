"""Fast paths of the 4 KiB request path (issue 17, lane small6): each gives exactly what the
general code it stands in for gives, and the shared decoded version is never stale."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.logs import _ENCODE, _encode_line
from storage.crypto.keys import object_identity, pack_fields
from storage.keyspace import _NUL, escape, pack
from storage.objects import PutOptions
from storage.records import FORMAT_VERSION, Bucket
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, wired_cluster


def _pack_reference(*parts: str) -> bytes:
    """The tuple encoding component by component (as `pack` was written before)."""
    return b"".join(escape(p) + _NUL for p in parts)


@given(st.lists(st.text(alphabet=st.sampled_from(["a", "\x00", "\xff", "é", "/"]), max_size=6)
                | st.text(), max_size=5))
def test_pack_is_the_component_encoding(parts: list[str]) -> None:
    assert pack(*parts) == _pack_reference(*parts)


def test_pack_escapes_nul_anywhere() -> None:
    for parts in [("a\x00",), ("\x00", "b"), ("O", "b", "k\x00"), ("",), (), ("", "")]:
        assert pack(*parts) == _pack_reference(*parts)


def _fields_reference(label: bytes, fields: list[str | bytes | int]) -> bytes:
    out = bytearray(label)
    for f in fields:
        if isinstance(f, int):
            b = struct.pack(">q", f)
        elif isinstance(f, str):
            b = f.encode("utf-8", "surrogateescape")
        else:
            b = f
        out += struct.pack(">I", len(b)) + b
    return bytes(out)


@given(st.binary(max_size=8), st.lists(
    st.text() | st.binary(max_size=40) | st.integers(-2**63, 2**63 - 1) | st.booleans(),
    max_size=6))
def test_pack_fields_is_the_length_prefixed_encoding(label: bytes,
                                                     fields: list[str | bytes | int]) -> None:
    assert pack_fields(label, fields) == _fields_reference(label, fields)


def test_object_identity_is_remembered_and_exact() -> None:
    got = object_identity("t", "b", "k\udcff", "v")
    assert got == _fields_reference(b"", ["t", "b", "k\udcff", "v"]).hex()
    assert object_identity("t", "b", "k\udcff", "v") is got


def test_decode_drops_fields_it_does_not_know() -> None:
    b = Bucket(name="b", tenant="t", created=1.0, region="r")
    d = msgpack.unpackb(b.encode())
    newer = msgpack.packb({**d, "from_a_newer_writer": 1}, use_bin_type=True)
    assert Bucket.decode(newer) == Bucket.decode(b.encode()) == b
    assert msgpack.unpackb(b.encode())["fv"] == FORMAT_VERSION  # the version stays written


@given(st.dictionaries(st.text(), st.text() | st.integers() | st.floats() | st.none()
                       | st.booleans(), max_size=8))
def test_request_line_is_the_encoders_line(fields: dict[str, object]) -> None:
    out = {"ts": 1.5, "level": "info", "logger": "tessera.access", "msg": "request", **fields}
    assert _encode_line(out) == _ENCODE(out) == json.dumps(out, default=str,
                                                           separators=(",", ":"))


@pytest.mark.asyncio
async def test_shared_current_version_is_reused_only_while_its_record_is(tmp_path: Path,
                                                                        ) -> None:
    cfg = sim_config(tmp_path, 4096)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as c:  # type: ignore[arg-type]
        b = await c.buckets.create("t", "bk")

        async def put(body: bytes) -> None:
            async def chunks():  # type: ignore[no-untyped-def]
                yield body
            await c.objects.put(b, "k", chunks(), PutOptions(size_hint=len(body)))

        await put(b"one")
        first = await c.objects.head(b, "k", shared=True)
        assert await c.objects.head(b, "k", shared=True) is first  # the same record: reused
        private = await c.objects.head(b, "k")
        assert private is not first and private == first  # callers that edit get their own
        await put(b"two!")
        second = await c.objects.head(b, "k", shared=True)
        assert second is not first and second.size == 4  # a new record: decoded afresh
        assert first.size == 3  # what an earlier reader holds is left as it was
        body = b"".join([bytes(x) async for x in c.objects.read(second)])
        assert body == b"two!"
