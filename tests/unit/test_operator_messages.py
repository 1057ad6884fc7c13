"""newuser22: what operator commands say when they cannot help (`tessera node lost-packs`, admin fields).

Before, asking about a stopped node printed only the connection error (what to do next was
left out), and `--ack 7` for a pack the node does not report printed "acknowledged: none"
without saying which packs it does report, so a typo'd pack number looked like a success.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from gateway.admin.auth import AdminError
from gateway.admin.nodes import NodesApi
from ops.nodecli import lost_packs_text
from storage.errors import StorageError


def test_a_node_that_does_not_answer_is_told_to_be_started() -> None:
    async def health(spec: object, timeout_s: float) -> dict:
        raise StorageError("ClientConnectorError: Cannot connect to host 127.0.1.2:9100")

    api = SimpleNamespace(cluster=SimpleNamespace(nodes=SimpleNamespace(health=health)))
    member = SimpleNamespace(spec=SimpleNamespace(id="n2"))
    with pytest.raises(AdminError) as e:
        asyncio.run(NodesApi(api)._node_health(member))  # type: ignore[arg-type]
    assert (e.value.status, e.value.code) == (503, "NodeUnreachable")
    assert "Cannot connect to host" in e.value.message  # the cause stays
    assert "start it" in e.value.message and "then ask again" in e.value.message


def test_an_ack_that_did_nothing_names_what_the_node_reports() -> None:
    text = lost_packs_text("n1", {"acknowledged": [], "packs_lost": [3, 4]})
    assert text.splitlines()[0] == "node n1: lost packs acknowledged: none"
    assert text.splitlines()[1].startswith("node n1: lost packs 3, 4 ")
    assert lost_packs_text("n1", {"acknowledged": [3, 4], "packs_lost": []}).splitlines() == [
        "node n1: lost packs acknowledged: 3, 4", "node n1: no lost pack reported"]


def test_an_empty_string_field_is_named_as_empty() -> None:
    """`tessera tenant update acme --canonical-id ""` was refused with "the body needs a
    string field 'canonical_id'", though it sent a string: the message says non-empty."""
    from gateway.admin.api import _str_field

    with pytest.raises(AdminError) as e:
        _str_field({"canonical_id": ""}, "canonical_id")
    assert e.value.message == "the body needs a non-empty string field 'canonical_id'"
