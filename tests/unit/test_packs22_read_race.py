"""packs22: a read racing a punch. A read locates a packed record; before it reads the
bytes, the shard is replaced or deleted and the dead record punched (its body zeros). The
read sees the shard where it is now (replaced) or gone (404), never a corrupt shard: no
checksum failure counted (a false bit-rot signal), nothing quarantined, no 409."""

from __future__ import annotations

import pytest

from nodes.handlers import NODE
from nodes.shardfile import ShardLocation
from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import (  # noqa: F401 - `node`: the fixture
    BLOCK,
    Node,
    node,
    put,
    same_header_other_bytes,
)


def _failures(n: Node) -> float:
    app = n.runner.app
    return app[NODE].metrics.checksum_failures.labels(where="read")._value.get()


def _stale_once(n: Node, monkeypatch: pytest.MonkeyPatch, old: ShardLocation) -> None:
    """The next locate answers the record located before the change (the race's window)."""
    real = n.store.locate
    calls = []

    def locate(sid: str) -> ShardLocation:
        calls.append(sid)
        return old if len(calls) == 1 else real(sid)
    monkeypatch.setattr(n.store, "locate", locate)


@pytest.mark.parametrize("change", ["replace", "delete"])
async def test_a_read_racing_a_punch_sees_the_shard_or_gone_never_rot(
        node: Node, monkeypatch: pytest.MonkeyPatch, change: str) -> None:  # noqa: F811
    sid, h, _, body = make_shard(frames=4, block_size=BLOCK, last=None)
    assert (await put(node, body, sid))[0] == 201
    packs = node.store.packs
    assert packs is not None
    old = node.store.locate(sid)
    new = None
    if change == "replace":
        new = same_header_other_bytes(h, 4)
        await packs.put(sid, [new], replace=True)
    else:
        assert (await node.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
    assert await packs.punch(min_dead=0) > 0  # the old record's body is zeros now
    before = _failures(node)
    _stale_once(node, monkeypatch, old)
    status, got = await node.call("GET", f"/v1/shards/{sid}?first=0&count=4")
    print(change, "status", status, "checksum failures counted:", _failures(node) - before,
          "quarantined:", len(await node.store.quarantined()))
    assert _failures(node) == before
    assert await node.store.quarantined() == []
    if change == "replace":
        assert status == 200 and got == new
    else:
        assert status == 404
