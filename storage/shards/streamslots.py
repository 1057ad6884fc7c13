"""A bound on the shard GET streams one process has open to each node, that cannot deadlock.

A read holds k streams (one per source) for as long as its consumer takes, and opens
another when a source fails. A plain semaphore per node, taken stream by stream, could
deadlock: a read holding node 1's last slot waits for node 2's while another holds node 2's
last and waits for node 1's. So:

- a read takes the slots of all its first streams in one step (`admit`): it waits holding
  none of them, and waiters are served in arrival order (a read of many nodes is not
  starved by reads of few);
- a stream a read adds later (a failed source's replacement, a liar read last) takes its
  slot at once, over the bound if it must (`add`): waiting there would be waiting while
  holding;
- an admission that has waited `ADMIT_WAIT_S` goes ahead over the bound, so a consumer
  that holds one read while it waits for another's admission (nothing here does so)
  is delayed, never hung.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterable

from storage.config import NodeSpec

# A read holds its slots for as long as its consumer takes (for a GET, the S3 client's
# socket), so slow downloads fill a node's slots without using it: the bound is wide and
# an admission's wait short, so they cost other reads at most `ADMIT_WAIT_S` each, not a
# hang (MinIO's requests_max queues the same way, for longer).
MAX_STREAMS_PER_NODE = 256  # shard GET streams open to one node at once, per process
ADMIT_WAIT_S = 1.0  # an admission waits at most this long, then goes over the bound


class StreamSlots:
    """Shard GET streams open per node address in this process (one event loop)."""

    def __init__(self, limit: int = MAX_STREAMS_PER_NODE,
                 admit_wait_s: float = ADMIT_WAIT_S) -> None:
        self.limit = limit
        self.admit_wait_s = admit_wait_s
        self.open: Counter[str] = Counter()  # streams open per node address
        self.overflows = 0  # streams opened over the bound (`add`, or an admission's wait cap)
        self._queue: deque[tuple[Counter[str], asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Admissions queued."""
        return len(self._queue)

    async def admit(self, nodes: Iterable[NodeSpec]) -> None:
        """Take one slot per entry of `nodes` (a node listed twice takes two), all at once:
        waits, holding none, until every one is free and no earlier admission waits."""
        need = Counter(n.address for n in nodes)
        if not self._queue and self._fits(need):
            self._take(need)
            return
        entry = (need, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        try:
            async with asyncio.timeout(self.admit_wait_s):
                await entry[1]
        except TimeoutError:
            if self._drop(entry):  # still queued: go ahead over the bound
                self._take(need)
                self.overflows += 1
            return  # else granted as the timer fired: the slots are ours
        except asyncio.CancelledError:
            if not self._drop(entry):  # granted already: give them back
                self.give_all(need)
            raise

    def add(self, node: NodeSpec) -> None:
        """One more stream to `node` for a read that holds others: at once, never waiting."""
        self.open[node.address] += 1
        if self.open[node.address] > self.limit:
            self.overflows += 1

    def give(self, node: NodeSpec) -> None:
        """A stream to `node` closed."""
        self.give_all(Counter({node.address: 1}))

    def give_all(self, counts: Counter[str]) -> None:
        for address, n in counts.items():
            self.open[address] -= n
            if self.open[address] <= 0:
                del self.open[address]
        self._grant()

    def _fits(self, need: Counter[str]) -> bool:
        return all(self.open[a] + n <= self.limit for a, n in need.items())

    def _take(self, need: Counter[str]) -> None:
        for address, n in need.items():
            self.open[address] += n

    def _grant(self) -> None:
        """Admit queued reads in order while the first fits."""
        for entry in list(self._queue):
            need, fut = entry
            if fut.done():  # cancelled (its wait ended): its owner takes it off the queue
                continue
            if not self._fits(need):
                return
            self._queue.remove(entry)
            self._take(need)
            fut.set_result(None)

    def _drop(self, entry: tuple[Counter[str], asyncio.Future[None]]) -> bool:
        """Take `entry` off the queue; False when it was granted (not queued any more)."""
        for i, queued in enumerate(self._queue):
            if queued is entry:
                del self._queue[i]
                self._grant()  # the next ones may fit now
                return True
        return False


__all__ = ["MAX_STREAMS_PER_NODE", "StreamSlots"]
