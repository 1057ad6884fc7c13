"""`tessera status` says why a node is not up: a node whose process ran but whose clock was
off (its health probe refused as outside the replay window) showed only "down" in the table,
the reason only in `--json`."""

from __future__ import annotations

from ops.status import _why_not_up

REFUSED = ('node n1: health 401 {"error": "unauthorized", '
           '"message": "request outside the replay window"}')


def test_a_node_down_on_its_clock_names_the_clock_and_the_setting() -> None:
    nodes = [{"id": "n1", "state": "down", "last_error": REFUSED},
             {"id": "n2", "state": "up", "last_error": ""}]
    (line,) = _why_not_up(nodes)
    assert line.startswith("  n1 down: health 401, request outside the replay window")
    assert "node_request_window_s" in line and "NTP" in line


def test_other_errors_are_shown_as_they_came_and_up_nodes_not_at_all() -> None:
    nodes = [{"id": "n3", "state": "suspect", "last_error": "node n3: Cannot connect to host"},
             {"id": "n4", "state": "down", "last_error": ""},
             {"id": "n5", "state": "up", "last_error": "old error"}]
    assert _why_not_up(nodes) == ["  n3 suspect: Cannot connect to host"]
