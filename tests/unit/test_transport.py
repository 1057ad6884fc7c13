"""The node transport is one declared Protocol that the real client and the simulation's
nodes both implement, so the simulation tests use the real wiring (`Cluster.wire`)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from storage.shards.client import NodeClient
from storage.shards.transport import NodeTransport
from storage.testing.simnodes import SimNodes

METHODS = sorted(n for n, v in vars(NodeTransport).items()
                 if callable(v) and not n.startswith("_"))


@pytest.mark.parametrize("impl", [NodeClient, SimNodes])
def test_implementations_match_the_protocol(impl: type) -> None:
    for name in METHODS:
        assert str(inspect.signature(getattr(impl, name))) == \
            str(inspect.signature(getattr(NodeTransport, name))), f"{impl.__name__}.{name}"


def test_simulation_tests_need_no_type_ignore() -> None:
    root = Path(__file__).resolve().parents[2]
    for p in [*(root / "tests" / "sim").rglob("*.py"), root / "storage/testing/simnodes.py"]:
        assert "type: ignore" not in p.read_text(), p
