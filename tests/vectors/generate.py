"""Compute the golden vectors of format v1 (shard header, frame, sealed stripe, records).

`python -m tests.vectors.generate` rewrites `foundation_v1.json`. Do that only on purpose:
a changed shard or stripe vector means stored data would no longer read back (bump the
format version instead). A record may gain a field with a default; then regenerate, and
the `*_initial` vectors (kept across regenerations) prove the older records still decode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storage.crypto import keys
from storage.crypto.aead import SegmentCipher, unwrap
from storage.erasure import ErasureCodec
from storage.keyspace import object_key, version_key
from storage.pipeline import StripeCodec
from storage.records import Bucket, ObjectVersion, PartLayout
from storage.shards.format import ShardHeader, pack_frame

PATH = Path(__file__).with_name("foundation_v1.json")

DEK = bytes(range(32))
KEK = bytes(range(32, 64))
STRIPE_ID = bytes(range(16))
IDENTITY = keys.object_identity("tenant-a", "bucket-b", "key/c", "version-d")
SEGMENT_SIZE = 64
PLAINTEXT = (b"Tessera golden vector. " * 5)[:100]  # two segments: 64 + 36 bytes


def header() -> ShardHeader:
    return ShardHeader(k=4, m=2, index=5, segment_size=1 << 20, block_size=1 << 18,
                       stripe_id=STRIPE_ID)


def stripe_codec() -> StripeCodec:
    return StripeCodec(cipher=SegmentCipher(DEK), codec=ErasureCodec(4, 2), identity=IDENTITY,
                       part=1, stripe_id=STRIPE_ID, segment_size=SEGMENT_SIZE)


def sealed_stripe() -> list[list[str]]:
    """Framed blocks (hex) per segment per shard of PLAINTEXT under the fixed DEK."""
    codec = stripe_codec()
    headers = codec.headers()
    out = []
    n = -(-len(PLAINTEXT) // SEGMENT_SIZE)
    for i in range(n):
        seg = PLAINTEXT[i * SEGMENT_SIZE:(i + 1) * SEGMENT_SIZE]
        out.append([f.hex() for f in codec.encode(headers, i, i == n - 1, seg)])
    return out


def object_version() -> ObjectVersion:
    return ObjectVersion(
        bucket="bucket-b", key="key/c", version_id="null", tenant="tenant-a", size=100,
        etag="0123456789abcdef0123456789abcdef", last_modified=1767225600.5,
        parts=[PartLayout(number=1, size=100, etag="", stripe_id=STRIPE_ID, k=4, m=2,
                          segment_size=SEGMENT_SIZE,
                          nodes=["n1", "n4", "n7", "n2", "n5", None])],
        dek=b"\x01" * 60, kek_version=1, user_meta={"color": "blue"},
        identity_version="version-d")


def bucket() -> Bucket:
    return Bucket(name="bucket-b", tenant="tenant-a", created=1767225600.0)


def compute() -> dict[str, Any]:
    h = header()
    codec = stripe_codec()
    return {
        "shard_header": h.pack().hex(),
        "frame_segment3_tessera": pack_frame(h, 3, b"tessera").hex(),
        "stripe_headers": [x.pack().hex() for x in codec.headers()],
        "segment_aad_part1_seg0_last": keys.segment_aad(IDENTITY, 1, 0, True).hex(),
        "object_identity": IDENTITY,
        "sealed_stripe": sealed_stripe(),
        "dek_aad": keys.dek_aad("tenant-a", IDENTITY).hex(),
        "kek_aad": keys.kek_aad("tenant-a", 1).hex(),
        "record_object_version": object_version().encode().hex(),
        "record_bucket": bucket().encode().hex(),
        "key_object": object_key("bucket-b", "key/c").hex(),
        "key_version": version_key("bucket-b", "key/c", "00001.v").hex(),
    }


def wrapped_dek_vector() -> dict[str, str]:
    """A wrapped DEK uses a random nonce, so it is pinned by unwrapping, not by re-wrapping."""
    blob = keys.wrap_dek(KEK, "tenant-a", IDENTITY, DEK)
    assert unwrap(KEK, blob, keys.dek_aad("tenant-a", IDENTITY)) == DEK
    return {"wrapped_dek": blob.hex()}


def main() -> None:
    old = json.loads(PATH.read_text()) if PATH.exists() else {}
    data = compute()
    data["wrapped_dek"] = old.get("wrapped_dek") or wrapped_dek_vector()["wrapped_dek"]
    # Records written by earlier builds of format v1 stay, decode-only: they must still read.
    data.update({k: v for k, v in old.items() if k.endswith("_initial")})
    PATH.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
