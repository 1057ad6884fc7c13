"""S3 XML bodies of multipart uploads: Initiate/Complete results, ListParts and
ListMultipartUploads, built like every response in `gateway.s3.xml` (AWS's element order,
the S3 namespace, golden tests parsed back with botocore in `tests/unit/test_s3_xml.py`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.s3.errors import xml_document
from gateway.s3.xml import (
    Owner,
    _add,
    _add_checksums,
    _add_common_prefixes,
    _add_owner,
    _encoder,
    _quote_etag,
    _root,
)

__all__ = ["PartEntry", "UploadEntry", "complete_multipart_xml", "initiate_multipart_xml",
           "list_multipart_uploads_xml", "list_parts_xml"]


@dataclass(frozen=True)
class PartEntry:
    """One uploaded part in ListParts; `checksums` maps algorithm (`CRC32`...) to base64."""

    part_number: int
    last_modified: datetime
    etag: str
    size: int
    checksums: Mapping[str, str] | None = None


@dataclass(frozen=True)
class UploadEntry:
    """One in-progress multipart upload in ListMultipartUploads."""

    key: str
    upload_id: str
    initiated: datetime
    storage_class: str = "STANDARD"
    owner: Owner | None = None
    initiator: Owner | None = None
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


def initiate_multipart_xml(bucket: str, key: str, upload_id: str) -> bytes:
    """InitiateMultipartUploadResult."""
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    return xml_document(root)


def complete_multipart_xml(
    location: str,
    bucket: str,
    key: str,
    etag: str,
    checksums: Mapping[str, str] | None = None,
    checksum_type: str | None = None,
) -> bytes:
    """CompleteMultipartUploadResult; `checksums` maps algorithm (`CRC32`...) to base64."""
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "ETag", _quote_etag(etag))
    _add_checksums(root, checksums, checksum_type)
    return xml_document(root)


def list_parts_xml(
    bucket: str,
    key: str,
    upload_id: str,
    parts: Iterable[PartEntry],
    *,
    part_number_marker: int = 0,
    next_part_number_marker: int | None = None,
    max_parts: int = 1000,
    is_truncated: bool = False,
    owner: Owner | None = None,
    initiator: Owner | None = None,
    storage_class: str = "STANDARD",
    checksum_algorithm: str | None = None,
    checksum_type: str | None = None,
) -> bytes:
    """ListPartsResult."""
    root = _root("ListPartsResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    if initiator is not None:
        _add_owner(root, "Initiator", initiator)
    if owner is not None:
        _add_owner(root, "Owner", owner)
    _add(root, "StorageClass", storage_class)
    _add(root, "PartNumberMarker", part_number_marker)
    if next_part_number_marker is not None:
        _add(root, "NextPartNumberMarker", next_part_number_marker)
    _add(root, "MaxParts", max_parts)
    _add(root, "IsTruncated", is_truncated)
    if checksum_algorithm:
        _add(root, "ChecksumAlgorithm", checksum_algorithm)
    if checksum_type:
        _add(root, "ChecksumType", checksum_type)
    for part in parts:
        elem = _add(root, "Part")
        _add(elem, "PartNumber", part.part_number)
        _add(elem, "LastModified", part.last_modified)
        _add(elem, "ETag", _quote_etag(part.etag))
        _add(elem, "Size", part.size)
        _add_checksums(elem, part.checksums)
    return xml_document(root)


def list_multipart_uploads_xml(
    bucket: str,
    uploads: Iterable[UploadEntry],
    *,
    key_marker: str = "",
    upload_id_marker: str = "",
    next_key_marker: str | None = None,
    next_upload_id_marker: str | None = None,
    prefix: str = "",
    delimiter: str | None = None,
    max_uploads: int = 1000,
    is_truncated: bool = False,
    common_prefixes: Iterable[str] = (),
    encoding_type: str | None = None,
) -> bytes:
    """ListMultipartUploadsResult."""
    encode = _encoder(encoding_type)
    root = _root("ListMultipartUploadsResult")
    _add(root, "Bucket", bucket)
    _add(root, "KeyMarker", encode(key_marker))
    _add(root, "UploadIdMarker", upload_id_marker)
    if next_key_marker is not None:
        _add(root, "NextKeyMarker", encode(next_key_marker))
    if next_upload_id_marker is not None:
        _add(root, "NextUploadIdMarker", next_upload_id_marker)
    _add(root, "Prefix", encode(prefix))
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    _add(root, "MaxUploads", max_uploads)
    if encoding_type:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", is_truncated)
    for upload in uploads:
        elem = _add(root, "Upload")
        _add(elem, "Key", encode(upload.key))
        _add(elem, "UploadId", upload.upload_id)
        if upload.initiator is not None:
            _add_owner(elem, "Initiator", upload.initiator)
        if upload.owner is not None:
            _add_owner(elem, "Owner", upload.owner)
        _add(elem, "StorageClass", upload.storage_class)
        _add(elem, "Initiated", upload.initiated)
        if upload.checksum_algorithm:
            _add(elem, "ChecksumAlgorithm", upload.checksum_algorithm)
        if upload.checksum_type:
            _add(elem, "ChecksumType", upload.checksum_type)
    _add_common_prefixes(root, common_prefixes, encode)
    return xml_document(root)
