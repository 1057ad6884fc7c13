"""A PutObject with `Transfer-Encoding: chunked` (no length announced) past the single-upload
cap is refused as AWS refuses an upload over it: 400 EntityTooLarge, not IncompleteBody
("longer than announced": nothing was announced). Reachable since the cap is 5 GiB."""

from __future__ import annotations

import subprocess


def test_chunked_put_over_the_cap_is_entity_too_large(gateway_set_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cap = 1024 * 1024
    c = gateway_set_cluster(f"max_object_size = {cap}")
    s3 = c.client()
    s3.create_bucket(Bucket="caps")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "caps", "Key": "over"})
    out = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-T", "-", url],
                         input=b"o" * (cap + 1), capture_output=True, timeout=120, check=True)
    body, _, status = out.stdout.rpartition(b"\n")
    assert status == b"400" and b"<Code>EntityTooLarge</Code>" in body, body
    assert s3.list_objects_v2(Bucket="caps")["KeyCount"] == 0
