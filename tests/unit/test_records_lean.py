"""Object records leave out the fields at their default (`storage.records.lean_fields`).

A listing page ranges over whole records, and on etcd every one crosses the JSON gateway:
the fields left out are bytes no reader needs, since decoding fills each with its default.
"""

from __future__ import annotations

import dataclasses

from storage.records import ObjectVersion, PartLayout, field_defaults, pack, unpack


def _small(**over: object) -> ObjectVersion:
    part = PartLayout(number=1, size=4096, etag="e" * 32, stripe_id=b"", k=0, m=0,
                      segment_size=1 << 20, nodes=[], body_ref="48b0388f7ea72240")
    v = ObjectVersion(bucket="b", key="k", version_id="null", tenant="t", size=4096,
                      etag="e" * 32, last_modified=1.5, parts=[part], dek=b"d" * 60,
                      kek_version=1, sse={"algorithm": "AES256"}, identity_version="i")
    return dataclasses.replace(v, **over)


def test_fields_at_their_default_are_not_written() -> None:
    raw = unpack(_small().encode())
    for name in ("headers", "storage_class", "delete_marker", "checksums", "checksum_type",
                 "tags", "restore", "acl", "lock", "upload_id", "user_meta", "content_type"):
        assert name not in raw, name
    assert set(raw["parts"][0]) == {"number", "size", "etag", "stripe_id", "k", "m",
                                    "segment_size", "nodes", "body_ref"}
    assert raw["fv"] == 1 and raw["kek_version"] == 1 and raw["sse"] == {"algorithm": "AES256"}


def test_a_lean_record_decodes_to_the_same_version() -> None:
    for v in (_small(), _small(delete_marker=True, storage_class="GLACIER", tags={"a": "b"},
                           checksum_type="COMPOSITE", checksums={"CRC32": "x"})):
        assert ObjectVersion.decode(v.encode()) == v


def test_a_value_equal_to_its_default_but_of_another_type_is_written() -> None:
    """0 == False in Python: a field is left out only at its default's type and value."""
    part = dataclasses.replace(_small().parts[0], plain_size=False)  # type: ignore[arg-type]
    raw = unpack(_small(parts=[part], content_type=None).encode())  # type: ignore[arg-type]
    assert raw["parts"][0]["plain_size"] is False and raw["content_type"] is None


def test_a_full_record_and_a_lean_one_decode_alike() -> None:
    """Records written before (every field present) read as they did."""
    v = _small()
    full = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    full["parts"] = [dataclasses.asdict(p) for p in v.parts]
    assert ObjectVersion.decode(pack(full)) == ObjectVersion.decode(v.encode()) == v


def test_defaults_are_not_shared_with_decoded_records() -> None:
    a, b = ObjectVersion.decode(_small().encode()), ObjectVersion.decode(_small().encode())
    a.tags["x"] = "y"
    assert b.tags == {} and field_defaults(ObjectVersion)["tags"] == {}


def test_a_small_objects_record_is_smaller() -> None:
    v = _small()
    full = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    full["parts"] = [dataclasses.asdict(p) for p in v.parts]
    assert len(v.encode()) < 0.75 * len(pack(full))


def test_the_defaults_are_pinned() -> None:
    """A field at its default is not written, so its default is what stored records hold:
    changing one changes every such record already stored. Add fields; never change these."""
    assert field_defaults(ObjectVersion) == {
        "parts": [], "dek": b"", "kek_version": 0, "content_type": "binary/octet-stream",
        "user_meta": {}, "headers": {}, "storage_class": "STANDARD", "delete_marker": False,
        "checksums": {}, "checksum_type": None, "tags": {}, "sse": {}, "identity_version": "",
        "restore": {}, "acl": {}, "lock": {}, "upload_id": ""}
    assert field_defaults(PartLayout) == {"profile": "standard", "checksums": {},
                                          "compressed": False, "plain_size": 0,
                                          "inline": b"", "body_ref": ""}
