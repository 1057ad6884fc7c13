"""A stateful property test: random sequences of S3 operations with hostile keys, driven by
hypothesis through boto3 against the shared real cluster, every answer checked against an
in-memory model of S3 (keys ordered by UTF-8 bytes, versions newest first).

Keys come from a tiny alphabet holding NUL, \\x01, '/', \\u00ff and an astral character, so
keys that are prefixes of each other or differ only after a NUL are common; a 1,024-byte key
and a 1,025-byte one (refused) are in the pool too. Operations: PUT, GET, GET by version id
(any key's), DELETE, DELETE by version id (any key's), CopyObject, a multipart upload,
ListObjectsV2 (prefix, delimiter, pages of 1-3) and ListObjectVersions (pages of 1-3).

Bounded for CI (S3_MODEL_EXAMPLES=3 runs of S3_MODEL_STEPS=12 steps); a long run by hand:
    S3_MODEL_EXAMPLES=200 S3_MODEL_STEPS=60 python -m pytest -q tests/integration/test_s3_model.py
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from tests.integration.buckets import drop_bucket
from tests.integration.cluster import LocalCluster

ALPHABET = ["a", "b", "/", "\x00", "\x01", "\u00ff", "\U0001f600"]
LONG_KEY = "k" * 1022 + "\x00z"  # 1,024 bytes: the longest key S3 accepts
TOO_LONG = "k" * 1025
keys = st.one_of(st.text(st.sampled_from(ALPHABET), min_size=1, max_size=4),
                 st.just(LONG_KEY))
bodies = st.binary(max_size=48)


def utf8(k: str) -> bytes:
    return k.encode("utf-8")


@dataclass
class Version:
    vid: str
    body: bytes | None  # None: a delete marker
    etag: str = ""


@dataclass
class Model:
    """What S3 holds: per key its versions, oldest first."""

    versioned: bool
    objects: dict[str, list[Version]] = field(default_factory=dict)

    def current(self, key: str) -> Version | None:
        vs = self.objects.get(key)
        return vs[-1] if vs and vs[-1].body is not None else None

    def add(self, key: str, v: Version) -> None:
        if self.versioned:
            self.objects.setdefault(key, []).append(v)
        elif v.body is None:
            self.objects.pop(key, None)
        else:
            self.objects[key] = [v]

    def owner(self, vid: str) -> str | None:
        return next((k for k, vs in self.objects.items() if any(v.vid == vid for v in vs)), None)


def _err(e: ClientError) -> tuple[int, str]:
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]


class S3Model(RuleBasedStateMachine):
    s3: Any = None  # set by the test from the shared cluster

    def teardown(self) -> None:
        if hasattr(self, "name"):  # (keys with NUL left behind upset others' listings)
            drop_bucket(self.s3, self.name)

    @initialize(versioned=st.booleans())
    def bucket(self, versioned: bool) -> None:
        self.name = "model-" + uuid.uuid4().hex[:16]
        self.s3.create_bucket(Bucket=self.name)
        if versioned:
            self.s3.put_bucket_versioning(Bucket=self.name,
                                          VersioningConfiguration={"Status": "Enabled"})
        self.model = Model(versioned)
        self.vids: list[str] = []  # every version id seen, of any key

    # writes --------------------------------------------------------------------------------

    @rule(key=keys, body=bodies)
    def put(self, key: str, body: bytes) -> None:
        r = self.s3.put_object(Bucket=self.name, Key=key, Body=body)
        assert r["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        self._added(key, Version(r.get("VersionId", "null"), body, r["ETag"]))

    @rule()
    def put_too_long(self) -> None:
        with pytest.raises(ClientError) as e:
            self.s3.put_object(Bucket=self.name, Key=TOO_LONG, Body=b"x")
        assert _err(e.value) == (400, "KeyTooLongError")

    @rule(key=keys)
    def delete(self, key: str) -> None:
        r = self.s3.delete_object(Bucket=self.name, Key=key)
        if self.model.versioned:
            assert r["DeleteMarker"] is True
            self._added(key, Version(r["VersionId"], None))
        else:
            self.model.add(key, Version("null", None))

    @precondition(lambda self: self.model.versioned and self.vids)
    @rule(key=keys, pick=st.integers(min_value=0))
    def delete_version(self, key: str, pick: int) -> None:
        """DELETE by version id, often another key's id: only this key's version may go."""
        vid = self.vids[pick % len(self.vids)]
        self.s3.delete_object(Bucket=self.name, Key=key, VersionId=vid)
        vs = self.model.objects.get(key, [])
        self.model.objects[key] = [v for v in vs if v.vid != vid]
        if not self.model.objects[key]:
            del self.model.objects[key]

    @rule(src=keys, dst=keys)
    def copy(self, src: str, dst: str) -> None:
        cur = self.model.current(src)
        if cur is None or src == dst:
            if cur is None:
                with pytest.raises(ClientError) as e:
                    self.s3.copy_object(Bucket=self.name, Key=dst,
                                        CopySource={"Bucket": self.name, "Key": src})
                assert _err(e.value) == (404, "NoSuchKey")
            return
        r = self.s3.copy_object(Bucket=self.name, Key=dst,
                                CopySource={"Bucket": self.name, "Key": src})
        assert cur.body is not None
        etag = f'"{hashlib.md5(cur.body).hexdigest()}"'  # a copy is one part, even of a multipart
        assert r["CopyObjectResult"]["ETag"] == etag
        self._added(dst, Version(r.get("VersionId", "null"), cur.body, etag))

    @rule(key=keys, body=bodies)
    def multipart(self, key: str, body: bytes) -> None:
        up = self.s3.create_multipart_upload(Bucket=self.name, Key=key)
        part = self.s3.upload_part(Bucket=self.name, Key=key, UploadId=up["UploadId"],
                                   PartNumber=1, Body=body)
        r = self.s3.complete_multipart_upload(
            Bucket=self.name, Key=key, UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        self._added(key, Version(r.get("VersionId", "null"), body, r["ETag"]))

    def _added(self, key: str, v: Version) -> None:
        self.model.add(key, v)
        if v.vid != "null":
            self.vids.append(v.vid)

    # reads ---------------------------------------------------------------------------------

    @rule(key=keys)
    def get(self, key: str) -> None:
        cur = self.model.current(key)
        if cur is None:
            with pytest.raises(ClientError) as e:
                self.s3.get_object(Bucket=self.name, Key=key)
            assert _err(e.value) == (404, "NoSuchKey")
            return
        r = self.s3.get_object(Bucket=self.name, Key=key)
        assert r["Body"].read() == cur.body and r["ETag"] == cur.etag

    @precondition(lambda self: self.vids)
    @rule(key=keys, pick=st.integers(min_value=0))
    def get_version(self, key: str, pick: int) -> None:
        """GET by version id, often another key's id: never the other key's bytes."""
        vid = self.vids[pick % len(self.vids)]
        mine = next((v for v in self.model.objects.get(key, []) if v.vid == vid), None)
        if mine is None:
            with pytest.raises(ClientError) as e:
                self.s3.get_object(Bucket=self.name, Key=key, VersionId=vid)
            assert _err(e.value) == (404, "NoSuchVersion")
        elif mine.body is not None:
            r = self.s3.get_object(Bucket=self.name, Key=key, VersionId=vid)
            assert r["Body"].read() == mine.body and r["VersionId"] == vid

    @rule(prefix=st.text(st.sampled_from(ALPHABET), max_size=2),
          delimiter=st.sampled_from(["", "/", "\x00", "a"]), page=st.integers(1, 3))
    def list_v2(self, prefix: str, delimiter: str, page: int) -> None:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix, Delimiter=delimiter,
            PaginationConfig={"PageSize": page})
        got_keys, got_prefixes = [], []
        for p in pages:
            got_keys += [(o["Key"], o["Size"], o["ETag"]) for o in p.get("Contents", [])]
            got_prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
        want_keys, want_prefixes = [], set()
        for k in sorted(self.model.objects, key=utf8):
            cur = self.model.current(k)
            if cur is None or not k.startswith(prefix):
                continue
            rest = k[len(prefix):]
            if delimiter and delimiter in rest:
                want_prefixes.add(prefix + rest[: rest.index(delimiter) + len(delimiter)])
            else:
                assert cur.body is not None
                want_keys.append((k, len(cur.body), cur.etag))
        assert got_keys == want_keys
        assert got_prefixes == sorted(want_prefixes, key=utf8)

    @rule(prefix=st.text(st.sampled_from(ALPHABET), max_size=2), page=st.integers(1, 3))
    def list_versions(self, prefix: str, page: int) -> None:
        pages = self.s3.get_paginator("list_object_versions").paginate(
            Bucket=self.name, Prefix=prefix, PaginationConfig={"PageSize": page})
        got_versions, got_markers = [], []
        for p in pages:
            got_versions += [(v["Key"], v["VersionId"], v["IsLatest"]) for v in
                             p.get("Versions", [])]
            got_markers += [(v["Key"], v["VersionId"], v["IsLatest"]) for v in
                            p.get("DeleteMarkers", [])]
        want_versions, want_markers = [], []
        for k in sorted(self.model.objects, key=utf8):
            if not k.startswith(prefix):
                continue
            vs = self.model.objects[k]
            for i, v in enumerate(reversed(vs)):
                row = (k, v.vid, i == 0)
                (want_versions if v.body is not None else want_markers).append(row)
        assert got_versions == want_versions
        assert got_markers == want_markers


EXAMPLES = int(os.environ.get("S3_MODEL_EXAMPLES", "3"))
STEPS = int(os.environ.get("S3_MODEL_STEPS", "12"))


def test_s3_matches_its_model(cluster: LocalCluster) -> None:
    S3Model.s3 = cluster.client()
    S3Model.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    S3Model.TestCase().runTest()
