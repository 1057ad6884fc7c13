"""An upload's `Part` record and the manifest's `PartLayout` are one concept: each is derived
from the other (`Part.of`, `Part.layout`) and only `size` differs (plaintext vs stored)."""

from __future__ import annotations

import pytest

from storage.multipart_records import Part
from storage.records import PartLayout


@pytest.mark.parametrize("compressed", [False, True])
def test_part_and_layout_round_trip(compressed: bool) -> None:
    lay = PartLayout(number=3, size=700, etag="e", stripe_id=b"s" * 16, k=4, m=2,
                     segment_size=65536, nodes=["n1", None, "n3", "n4", "n5", "n6"],
                     profile="archive" if compressed else "standard",
                     checksums={"CRC32": "AAAAAA=="}, compressed=compressed,
                     plain_size=1000 if compressed else 0)
    part = Part.of("up", lay, "e", 1.0)
    assert part.size == lay.plaintext_size == (1000 if compressed else 700)  # what S3 reports
    assert Part.decode(part.encode()).layout() == lay
