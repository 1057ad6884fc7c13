"""review22e L4: the admin route `POST /admin/v1/nodes/{id}/lost-packs/ack?packs=` took
what `str.isdigit` takes (`²` was a 500 with a traceback, `١٢` was pack 12, 5000 digits a
500) and reported a node's refusal (400) as 503 NodeUnreachable. It now parses `packs` as
the node does (`storage.shards.packlist`) and says 400 InvalidArgument for both."""

from __future__ import annotations

import types
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.admin.api import Call
from gateway.admin.auth import AdminError
from gateway.admin.nodes import NodesApi
from storage.shards.client import NodeError


class _Nodes:
    """A node transport's two calls the route makes: the node refuses (400) pack 13, and
    `down` makes it unreachable."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.asked: list[list[int]] = []

    async def health(self, spec: Any, timeout_s: float = 2.0) -> dict[str, Any]:
        return {"packs_lost": [3]}

    async def ack_lost_packs(self, spec: Any, packs: list[int]) -> list[int]:
        if self.down:
            raise NodeError("n1", "ClientConnectorError: refused")
        self.asked.append(packs)
        if 13 in packs:
            raise NodeError("n1", "POST 400 packs must be pack numbers", 400)
        return packs


async def _ack(query: str, nodes: _Nodes) -> tuple[int, Any]:
    api = NodesApi.__new__(NodesApi)
    api.cluster = types.SimpleNamespace(nodes=nodes)

    async def member(call: Call) -> Any:
        return types.SimpleNamespace(spec=types.SimpleNamespace(id="n1"))
    api._member = member  # type: ignore[method-assign]
    req = make_mocked_request("POST", "/admin/v1/nodes/n1/lost-packs/ack?packs=" + query)
    return await api.ack_lost_packs(Call(req, "k", {}))


@pytest.mark.parametrize("query", ["%C2%B2", "%D9%A1%D9%A2", "9" * 5000, "1,,2", "",
                                   ",".join(["1"] * 1001)])
async def test_packs_the_node_would_refuse_are_a_clear_400(query: str) -> None:
    nodes = _Nodes()
    with pytest.raises(AdminError) as err:
        await _ack(query, nodes)
    assert (err.value.status, err.value.code) == (400, "InvalidArgument"), err.value.message
    assert nodes.asked == []


async def test_a_node_refusal_is_400_and_an_unreachable_node_503() -> None:
    with pytest.raises(AdminError) as err:
        await _ack("3,13", _Nodes())
    assert (err.value.status, err.value.code) == (400, "InvalidArgument"), err.value.message
    with pytest.raises(AdminError) as err:
        await _ack("3", _Nodes(down=True))
    assert (err.value.status, err.value.code) == (503, "NodeUnreachable")
    assert (await _ack("3,4", _Nodes()))[1]["acknowledged"] == [3, 4]
