"""An annual durability estimate for k+m erasure coding across zones (MTTF/MTTR model).

Assumptions (printed by `tessera status` with the figures):
- node failures are independent and exponential, rate = AFR / 8760 per hour per node;
- a stripe's shards sit on k+m distinct nodes, at most m in any zone;
- a failed node's shards are rebuilt within MTTR hours (detection grace + rebuild time);
- data is lost when more than m shards of one stripe are lost before repair completes;
  node-level chain: rate ~= n*lam * prod_{i=1..m} (n-i)*lam*MTTR  (valid for lam*MTTR << 1);
- a permanent zone loss (rate zone AFR per zone) removes that zone's shards of every
  stripe; data is then lost if enough of the remaining nodes fail within the zone MTTR;
- bit rot is caught by scrubbing and repaired like a node failure (not modelled apart);
- stripes on the same set of nodes fail together: the cluster figure counts at most
  C(nodes, m+1) / C(k+m, m+1) independent stripe groups (the copyset argument), so
  cluster = 1 - (1 - p)^min(stripes, groups).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HOURS_PER_YEAR = 8760.0


@dataclass(frozen=True)
class DurabilityInputs:
    k: int
    m: int
    zones: int
    node_afr: float = 0.04  # annual failure rate of one node (disk + host)
    mttr_hours: float = 24.0
    zone_afr: float = 0.001  # permanent loss of a whole zone per year
    zone_mttr_hours: float = 24.0 * 7
    stripes: int = 1
    nodes: int = 0  # nodes in the cluster (0: exactly k+m)


@dataclass(frozen=True)
class DurabilityEstimate:
    stripe_loss_per_year: float
    cluster_loss_per_year: float
    nines: float
    inputs: DurabilityInputs

    def to_dict(self) -> dict[str, object]:
        return {"stripe_loss_per_year": self.stripe_loss_per_year,
                "cluster_loss_per_year": self.cluster_loss_per_year,
                "durability": 1.0 - self.cluster_loss_per_year,
                "nines": round(self.nines, 1), "inputs": asdict(self.inputs),
                "assumptions": ASSUMPTIONS}


ASSUMPTIONS = [
    "independent exponential node failures at the node AFR",
    "shards on k+m distinct nodes, at most m per zone",
    "a lost shard is rebuilt within MTTR (detection grace + rebuild)",
    "loss = more than m shards of one stripe lost before repair",
    "permanent zone loss at the zone AFR, its shards rebuilt within the zone MTTR",
    "scrubbing turns bit rot into repairable shard loss",
    "stripes sharing nodes fail together (at most C(N,m+1)/C(k+m,m+1) independent groups)",
]


def _chain(n: int, failures: int, lam: float, window_h: float) -> float:
    """Probability that `failures` of `n` nodes fail within one repair window (Poisson)."""
    if failures <= 0:
        return 1.0
    if failures > n:
        return 0.0
    return min(1.0, math.comb(n, failures) * (lam * window_h) ** failures)


def estimate(inp: DurabilityInputs) -> DurabilityEstimate:
    n = inp.k + inp.m
    lam = inp.node_afr / HOURS_PER_YEAR
    rate = n * lam  # first failure, per hour
    for i in range(1, inp.m + 1):
        rate *= (n - i) * lam * inp.mttr_hours
    p_nodes = -math.expm1(-rate * HOURS_PER_YEAR)
    per_zone = min(inp.m, math.ceil(n / max(1, inp.zones)))
    still_needed = inp.m - per_zone + 1
    p_zone = min(1.0, inp.zone_afr * min(inp.zones, n)) * _chain(
        n - per_zone, still_needed, lam, inp.zone_mttr_hours)
    p = min(1.0, p_nodes + p_zone)
    total = max(n, inp.nodes)
    groups = math.comb(total, inp.m + 1) / math.comb(n, inp.m + 1)
    eff = max(1.0, min(float(inp.stripes), groups))
    cluster = -math.expm1(eff * math.log1p(-p)) if p < 1.0 else 1.0
    nines = -math.log10(cluster) if cluster > 0 else float("inf")
    return DurabilityEstimate(stripe_loss_per_year=p, cluster_loss_per_year=cluster,
                              nines=min(nines, 99.0), inputs=inp)


@dataclass(frozen=True)
class MetadataDurability:
    """The metadata store's annual loss probability: the floor of every object's durability.

    A manifest lost is an object lost, and small objects live sealed inside their manifest,
    so no object is more durable than the store holding its record. SQLite is one file on
    one disk: it is lost with that disk (the node AFR), unless backed up. etcd keeps every
    record on a majority of its members (one per zone): it is lost when a majority fails
    within one repair window, or a zone is lost and enough of the others fail within the
    zone MTTR (conservative: a record may sit on exactly a majority).
    """

    backend: str
    members: int
    loss_per_year: float
    nines: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def metadata_estimate(backend: str, members: int, afr: float = 0.04, mttr_hours: float = 24.0,
                      zone_afr: float = 0.001,
                      zone_mttr_hours: float = 24.0 * 7) -> MetadataDurability:
    """Annual loss probability of the metadata store (see MetadataDurability)."""
    lam = afr / HOURS_PER_YEAR
    n = max(1, members)
    quorum = n // 2 + 1
    rate = n * lam
    for i in range(1, quorum):
        rate *= (n - i) * lam * mttr_hours
    p = -math.expm1(-rate * HOURS_PER_YEAR)
    if n > 1:  # a zone loss takes one member; a majority of the rest must then fail too
        p += min(1.0, zone_afr * n) * _chain(n - 1, quorum - 1, lam, zone_mttr_hours)
    p = min(1.0, p)
    nines = -math.log10(p) if p > 0 else 99.0
    return MetadataDurability(backend=backend, members=n, loss_per_year=p,
                              nines=round(min(nines, 99.0), 1))


def combined_loss(*probabilities: float) -> float:
    """Annual probability that at least one of several independent losses happens."""
    keep = 1.0
    for p in probabilities:
        keep *= 1.0 - p
    return 1.0 - keep
