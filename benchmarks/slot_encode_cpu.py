"""CPU per 1 MiB object of laying out its six shard requests' bytes, in one process.

`joined`: the body's chunks joined, sealed and coded by `encode_frames`, each shard file
made by `header.pack() + frame` and joined with its request head and trailer (what
`writelines` does on Python 3.11) - the path before session 8. `slots`: `encode_slots` from
the chunks as received and `ShardSlot.request` (head and trailer written around the shard
in its buffer). malloc tuned as the gateway tunes it.

    python benchmarks/slot_encode_cpu.py [--objects 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.crypto.aead import SegmentCipher  # noqa: E402
from storage.erasure import ErasureCodec  # noqa: E402
from storage.malloc import tune_malloc  # noqa: E402
from storage.pipeline import StripeCodec  # noqa: E402

HEAD, TRAILER = b"h" * 400, b"t" * 16  # about a signed shard PUT's head; the body MAC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    tune_malloc()
    codec = StripeCodec(SegmentCipher(os.urandom(32)), ErasureCodec(4, 2), "b/k/v", 1,
                        os.urandom(16), 1 << 20)
    headers = codec.headers()
    body = os.urandom(1 << 20)
    chunks: list[bytes | memoryview] = [body[i:i + 262144] for i in range(0, len(body), 262144)]

    def joined() -> None:
        frames = codec.encode_frames(headers, 0, True, b"".join(chunks))  # type: ignore[arg-type]
        for h, f in zip(headers, frames, strict=True):
            b"".join([HEAD, h.pack() + f, TRAILER])

    def slots() -> None:
        for s in codec.encode_slots(headers, chunks):
            s.request(HEAD, TRAILER)

    for _ in range(a.rounds):
        for name, fn in (("joined", joined), ("slots", slots)):
            t = time.process_time()
            for _ in range(a.objects):
                fn()
            print(f"{name} {(time.process_time() - t) / a.objects * 1000:.3f} ms/object",
                  end="  ")
        print()


if __name__ == "__main__":
    main()
