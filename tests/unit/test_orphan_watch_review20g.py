"""Review20g: OrphanWatch's cap (`WATCH_MAX`) filled by shards of a node the sweep no longer
walks (removed, or down: `_orphans_on` runs only for `health.usable()` nodes, so its
`wrapped` never comes) keeps every other node's orphans from being watched: they are never
deleted until the repair worker's process restarts. (mend20g: each check now drops the
entries of nodes it does not walk, `keep_nodes`; the sim test
tests/sim/test_orphan_watch_mend20g.py shows it through `_collect_orphans`. mend21a: the
nodes kept are the cluster map's that are not out; a node only down keeps its entries.)"""

from __future__ import annotations

from storage.workers.repair_orphans import OrphanWatch


def test_a_node_no_longer_walked_does_not_hold_the_watch_for_ever() -> None:
    now = [0.0]
    watch = OrphanWatch(clock=lambda: now[0], limit=4)
    for n in range(4):  # a returning node's stale copies, then the node is removed
        watch.watched_s("removed-node", f"{n:032x}.0")
    for _ in range(3):  # the live node's walks go on
        watch.keep_nodes({"live-node"})  # (as each orphan check does: the map's, not out)
        watch.watched_s("live-node", "ab" * 16 + ".1")
        watch.wrapped("live-node")
        now[0] += 86400.0
    assert watch.watched_s("live-node", "ab" * 16 + ".1") > 0, \
        "an orphan on a live node never watched: the cap is held by a node not walked"
