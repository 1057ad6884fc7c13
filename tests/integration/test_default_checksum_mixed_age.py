"""An upload made without a checksum algorithm whose part was stored before S3's default
CRC64NVME (an upload in progress across the upgrade) completes with no checksum: its parts'
CRC64NVMEs cannot be combined. A completion asserting `x-amz-checksum-type: FULL_OBJECT`
then asks for a type the object will not have: AWS answers a checksum type that does not
match with BadDigest (CompleteMultipartUpload ChecksumType, API reference), so it is refused
and the upload stays open, never accepted and left without a checksum. A repeat of the
completion asserting the type does not describe the object: NoSuchUpload, not 200.

The old part is made by a real cluster, then its record loses its CRC64NVME while the
cluster is stopped (as the gateway before the default wrote it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from storage.keyspace import part_key
from storage.multipart_records import Part
from tests.integration.cluster import LocalCluster


def _strip_default_checksum(db: Path, upload_id: str, number: int) -> None:
    """The part's record as written before the default: no CRC64NVME."""
    conn = sqlite3.connect(db)
    try:
        key = part_key(upload_id, number)
        (raw,) = conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        part = Part.decode(raw)
        assert part.checksums.pop("CRC64NVME", None) is not None  # the default was stored
        with conn:
            conn.execute("UPDATE kv SET v = ? WHERE k = ?", (part.encode(), key))
    finally:
        conn.close()


def _code(call: Any) -> str:
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"]


def test_full_object_asserted_on_a_part_older_than_the_default_is_refused(
        tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "data").start()
    try:
        s3 = c.client(request_checksum_calculation="when_required")
        s3.create_bucket(Bucket="mixed")
        up = s3.create_multipart_upload(Bucket="mixed", Key="k")["UploadId"]
        etag = s3.upload_part(Bucket="mixed", Key="k", UploadId=up, PartNumber=1,
                              Body=b"written before the default")["ETag"]
    finally:
        c.stop()
    _strip_default_checksum(c.data / "meta" / "tessera.db", up, 1)
    c.start()
    try:
        s3 = c.client(request_checksum_calculation="when_required")
        parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}

        def complete(**extra: Any) -> Any:
            return s3.complete_multipart_upload(Bucket="mixed", Key="k", UploadId=up,
                                                MultipartUpload=parts, **extra)

        assert _code(lambda: complete(ChecksumType="FULL_OBJECT")) == "BadDigest"
        assert s3.list_parts(Bucket="mixed", Key="k", UploadId=up)["Parts"]  # still open
        done = complete()  # asserting nothing: completes, with no checksum (as S3's old)
        assert "ChecksumCRC64NVME" not in done and "ChecksumType" not in done
        head = s3.head_object(Bucket="mixed", Key="k", ChecksumMode="ENABLED")
        assert "ChecksumCRC64NVME" not in head and "ChecksumType" not in head
        assert complete()["ETag"] == done["ETag"]  # a repeat is answered as the first
        assert _code(lambda: complete(ChecksumType="FULL_OBJECT")) == "NoSuchUpload"
    finally:
        c.stop()
