"""Time from a zone's return to full redundancy, under client load (issue 11's scenario).

    python benchmarks/zone_return_repair.py [--objects 16] [--mib 3] [--busy-rate MBPS]

Starts its own `tessera up` (fast sweep, 3 s down grace, the server's default repair rates
unless --busy-rate is given) and runs `zone_return` from tests/integration/test_repair_risk.py:
zone az1's node processes killed, objects written during the outage, the zone restarted,
then two more nodes killed (one in az2, one in az3) while a client keeps reading; prints
the seconds from the zone's return until every stripe is back to k+m, zone-safe, as JSON,
with `kills_seen_s` (when the two kills were seen) and `order`: every stripe repair rebuilt
after the return, from the gateway's log, in order, with the healthy shards it had when
assessed (does repair take the stripes at k before those at k+1?).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.test_repair_risk import zone_return  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=16, help="objects before and during")
    ap.add_argument("--mib", type=float, default=3.0, help="object size in MiB")
    ap.add_argument("--busy-rate", type=float, default=None,
                    help="TESSERA_REPAIR_BUSY_RATE_MBPS (default: the server's, 4)")
    ap.add_argument("--deadline", type=float, default=900.0)
    ap.add_argument("--port", type=int, default=0,
                    help="S3, admin and node ports PORT..PORT+2 (default: free ones)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tessera-zone-return-") as tmp:
        figures = zone_return(Path(tmp) / "data", a.objects, int(a.mib * 2**20), a.busy_rate,
                              a.deadline, a.port)
    figures["get_failures"] = len(figures["get_failures"])
    print(json.dumps({"objects": a.objects, "mib": a.mib, **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
