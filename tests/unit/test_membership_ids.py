"""A removed node's id is never reused, and the refusal says what to do instead."""

from __future__ import annotations

import pytest

from storage.config_sections import NodeSpec
from storage.errors import Conflict
from storage.membership import ACTIVE, REMOVED, Member, check_new_node


def test_a_removed_id_is_refused_with_the_way_out() -> None:
    old = NodeSpec("n4", "az2", "127.0.2.1:9100")
    with pytest.raises(Conflict, match="never reused: start the node under a new --id"):
        check_new_node([Member(old, REMOVED)], NodeSpec("n4", "az2", "127.0.2.9:9100"))
    # a live id is refused as before; a removed node's address may be used by a new id
    with pytest.raises(Conflict, match=r"already in the cluster map \(active\)"):
        check_new_node([Member(old, ACTIVE)], NodeSpec("n4", "az2", "127.0.2.9:9100"))
    check_new_node([Member(old, REMOVED)], NodeSpec("n4b", "az2", "127.0.2.1:9100"))
