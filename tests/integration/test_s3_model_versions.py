"""A second stateful property test against a model of S3, on what test_s3_model.py leaves out:
versioning that moves between unversioned, Enabled and Suspended (the null version replaced in
place, delete markers with id null), HEAD and user metadata, ranged GETs, reads and copies of a
delete marker by version id, CopyObject onto itself (refused unless REPLACE), copies of an
older version, multipart uploads left open (parts overwritten, listed, aborted, completed with
parts too small), ListObjects V1 with markers, ListObjectsV2 with StartAfter, ListObjectVersions
with a delimiter, and ListMultipartUploads.

Keys are drawn from '.', '/', NUL, 'e', U+0301 and U+00E9 (so NFC and NFD spellings of the same
text, '..', '//', a trailing '/' and keys that are prefixes of others are common) plus a few
fixed ones that look like paths or like our metadata records' type names. Driven through boto3
against the shared real cluster; bounded for CI, a long run by hand:
    S3_MODEL_EXAMPLES=100 S3_MODEL_STEPS=50 python -m pytest -q \
        tests/integration/test_s3_model_versions.py
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, precondition, rule

from tests.integration.buckets import drop_bucket
from tests.integration.cluster import LocalCluster
from tests.integration.test_s3_model import _err, utf8

ALPHABET = [".", "/", "\x00", "e", "\u0301", "\u00e9"]
FIXED = [".", "..", "/", "//", "a/", "a/./b", "a/../b", "O", "V\x00e", "k" * 1024]
keys = st.one_of(st.text(st.sampled_from(ALPHABET), min_size=1, max_size=4),
                 st.sampled_from(FIXED))
# small bodies live inline in their record; 4,097 bytes and more go to erasure-coded shards
bodies = st.one_of(st.binary(max_size=40),
                   st.integers(4097, 70_000).map(lambda n: (b"%d," % n * n)[:n]))
metas = st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["1", "x y"]), max_size=2)
MIN_PART = 5 * 1024 * 1024


def md5q(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


@dataclass
class Version:
    vid: str
    body: bytes | None  # None: a delete marker
    etag: str = ""
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class Upload:
    key: str
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # number: (body, etag)


class VersionsModel(RuleBasedStateMachine):
    s3: Any = None  # set by the test from the shared cluster
    uploads = Bundle("uploads")

    def teardown(self) -> None:
        if hasattr(self, "name"):  # (keys with NUL left behind upset others' listings)
            drop_bucket(self.s3, self.name)

    @initialize()
    def bucket(self) -> None:
        self.name = "mv-" + uuid.uuid4().hex[:16]
        self.s3.create_bucket(Bucket=self.name)
        self.state = "off"  # "off" (never versioned), "Enabled" or "Suspended"
        self.objects: dict[str, list[Version]] = {}  # oldest first
        self.vids: list[str] = ["null"]
        self.open: dict[str, Upload] = {}

    def current(self, key: str) -> Version | None:
        vs = self.objects.get(key)
        return vs[-1] if vs and vs[-1].body is not None else None

    def add(self, key: str, v: Version) -> None:
        """S3's rule: off replaces the one version; Suspended replaces the null version."""
        vs = self.objects.setdefault(key, [])
        if self.state == "off":
            vs.clear()
        elif self.state == "Suspended":
            vs[:] = [x for x in vs if x.vid != "null"]
        if self.state == "off" and v.body is None:
            del self.objects[key]
            return
        vs.append(v)
        if v.vid not in self.vids:
            self.vids.append(v.vid)

    def written(self, r: dict[str, Any]) -> str:
        """A write's version id. AWS sends none unless Enabled, not even null when Suspended
        (PutObject's sample responses; versitygw#2164, ministack#1436)."""
        if self.state != "Enabled":
            assert "VersionId" not in r, (self.state, r["VersionId"])
            return "null"
        assert r["VersionId"] != "null"
        return str(r["VersionId"])

    # versioning, writes ----------------------------------------------------------------

    @rule(status=st.sampled_from(["Enabled", "Suspended"]))
    def versioning(self, status: str) -> None:
        self.s3.put_bucket_versioning(Bucket=self.name,
                                      VersioningConfiguration={"Status": status})
        self.state = status

    @rule(key=keys, body=bodies, meta=metas)
    def put(self, key: str, body: bytes, meta: dict[str, str]) -> None:
        r = self.s3.put_object(Bucket=self.name, Key=key, Body=body, Metadata=meta)
        assert r["ETag"] == md5q(body)
        self.add(key, Version(self.written(r), body, r["ETag"], meta))

    @rule(key=keys)
    def delete(self, key: str) -> None:
        r = self.s3.delete_object(Bucket=self.name, Key=key)
        if self.state == "off":
            assert "DeleteMarker" not in r
        else:
            assert r["DeleteMarker"] is True
        # unversioned: no header; Suspended: a null marker, named (x-amz-version-id: null)
        vid = r["VersionId"] if self.state != "off" else "null"
        assert "VersionId" in r or self.state == "off"
        assert (vid != "null") == (self.state == "Enabled")
        self.add(key, Version(vid, None))

    @rule(key=keys, pick=st.integers(min_value=0))
    def delete_version(self, key: str, pick: int) -> None:
        """DELETE by version id (often another key's, or null): only this key's goes."""
        vid = self.vids[pick % len(self.vids)]
        r = self.s3.delete_object(Bucket=self.name, Key=key, VersionId=vid)
        vs = self.objects.get(key, [])
        mine = next((v for v in vs if v.vid == vid), None)
        # a versioned bucket echoes the id even when no such version exists (AWS; minio#11090)
        assert r.get("VersionId", "null") == vid if self.state == "off" else r["VersionId"] == vid
        if mine is not None:
            assert r.get("DeleteMarker", False) is (mine.body is None)
            vs.remove(mine)
            if not vs:
                del self.objects[key]

    @rule(src=keys, dst=keys, replace=st.booleans(), meta=metas)
    def copy(self, src: str, dst: str, replace: bool, meta: dict[str, str]) -> None:
        kw: dict[str, Any] = {"MetadataDirective": "REPLACE", "Metadata": meta} if replace else {}
        call = lambda: self.s3.copy_object(Bucket=self.name, Key=dst,  # noqa: E731
                                           CopySource={"Bucket": self.name, "Key": src}, **kw)
        cur = self.current(src)
        if cur is None:
            assert _expect_error(call) == (404, "NoSuchKey")
            return
        if src == dst and not replace:
            assert _expect_error(call) == (400, "InvalidRequest")
            return
        r = call()
        assert cur.body is not None
        assert r["CopyObjectResult"]["ETag"] == md5q(cur.body)
        assert r.get("CopySourceVersionId", "null") == cur.vid
        self.add(dst, Version(self.written(r), cur.body, md5q(cur.body),
                              meta if replace else dict(cur.meta)))

    @precondition(lambda self: len(self.vids) > 1)
    @rule(src=keys, dst=keys, pick=st.integers(min_value=0))
    def copy_version(self, src: str, dst: str, pick: int) -> None:
        vid = self.vids[pick % len(self.vids)]
        call = lambda: self.s3.copy_object(  # noqa: E731
            Bucket=self.name, Key=dst, CopySource={"Bucket": self.name, "Key": src,
                                                   "VersionId": vid})
        mine = next((v for v in self.objects.get(src, []) if v.vid == vid), None)
        if mine is None:
            assert _expect_error(call) == (404, "NoSuchVersion")
        elif mine.body is None:
            assert _expect_error(call) == (400, "InvalidRequest")
        else:
            r = call()
            assert r["CopySourceVersionId"] == vid
            self.add(dst, Version(self.written(r), mine.body, md5q(mine.body), dict(mine.meta)))

    # multipart uploads left open -------------------------------------------------------

    @rule(target=uploads, key=keys)
    def create_upload(self, key: str) -> str:
        uid = self.s3.create_multipart_upload(Bucket=self.name, Key=key)["UploadId"]
        self.open[uid] = Upload(key)
        return uid

    @rule(uid=uploads, number=st.integers(1, 3), body=bodies, big=st.booleans())
    def upload_part(self, uid: str, number: int, body: bytes, big: bool) -> None:
        """A part, often over one already uploaded under that number; big: 5 MiB."""
        if big:
            body = body.ljust(MIN_PART, b"p")
        up = self.open.get(uid)
        call = lambda: self.s3.upload_part(  # noqa: E731
            Bucket=self.name, Key=up.key if up else "x", UploadId=uid, PartNumber=number,
            Body=body)
        if up is None:
            assert _expect_error(call) == (404, "NoSuchUpload")
            return
        r = call()
        assert r["ETag"] == md5q(body)
        up.parts[number] = (body, r["ETag"])

    @rule(uid=uploads)
    def list_parts(self, uid: str) -> None:
        up = self.open.get(uid)
        if up is None:
            assert _expect_error(lambda: self.s3.list_parts(
                Bucket=self.name, Key="x", UploadId=uid)) == (404, "NoSuchUpload")
            return
        got = []
        for page in self.s3.get_paginator("list_parts").paginate(
                Bucket=self.name, Key=up.key, UploadId=uid, PaginationConfig={"PageSize": 2}):
            got += [(p["PartNumber"], p["ETag"], p["Size"]) for p in page.get("Parts", [])]
        assert got == [(n, e, len(b)) for n, (b, e) in sorted(up.parts.items())]

    @rule(uid=uploads)
    def abort(self, uid: str) -> None:
        up = self.open.pop(uid, None)
        call = lambda: self.s3.abort_multipart_upload(  # noqa: E731
            Bucket=self.name, Key=up.key if up else "x", UploadId=uid)
        if up is None:
            assert _expect_error(call) == (404, "NoSuchUpload")
        else:
            call()

    @rule(uid=uploads)
    def complete(self, uid: str) -> None:
        up = self.open.get(uid)
        parts = sorted(up.parts.items()) if up else []
        call = lambda: self.s3.complete_multipart_upload(  # noqa: E731
            Bucket=self.name, Key=up.key if up else "x", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, (_, e) in parts]})
        if up is None:
            assert _expect_error(call) == (404, "NoSuchUpload")
            return
        if not parts:
            assert _expect_error(call) == (400, "MalformedXML")
            return
        if any(len(b) < MIN_PART for _, (b, _) in parts[:-1]):
            assert _expect_error(call) == (400, "EntityTooSmall")
            return  # the upload stays open
        r = call()
        body = b"".join(b for _, (b, _) in parts)
        etag = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for _, (_, e) in parts))
        assert r["ETag"] == f'"{etag.hexdigest()}-{len(parts)}"'
        del self.open[uid]
        self.add(up.key, Version(self.written(r), body, r["ETag"]))

    @rule()
    def list_uploads(self) -> None:
        r = self.s3.list_multipart_uploads(Bucket=self.name, EncodingType="url")
        assert not r.get("IsTruncated")
        got = [(unquote(u["Key"]), u["UploadId"]) for u in r.get("Uploads", [])]
        want = sorted(((u.key, uid) for uid, u in self.open.items()),
                      key=lambda t: utf8(t[0]))
        assert [k for k, _ in got] == [k for k, _ in want]
        assert sorted(got) == sorted(want)

    # reads -----------------------------------------------------------------------------

    @rule(key=keys, how=st.sampled_from(["get", "head", "range"]),
          a=st.integers(0, 80_000), n=st.integers(0, 50))
    def get(self, key: str, how: str, a: int, n: int) -> None:
        """GET (whole, or a range when the body has bytes) or HEAD of the current version."""
        cur = self.current(key)
        head = how == "head"
        if cur is None:
            vs = self.objects.get(key)
            call = (lambda: self.s3.head_object(Bucket=self.name, Key=key)) if head else (
                lambda: self.s3.get_object(Bucket=self.name, Key=key))
            with pytest.raises(ClientError) as e:
                call()
            assert _err(e.value)[0] == 404
            marked = e.value.response["ResponseMetadata"]["HTTPHeaders"].get(
                "x-amz-delete-marker")
            assert (marked == "true") == bool(vs), (vs, marked)
            return
        assert cur.body is not None
        if head:
            r = self.s3.head_object(Bucket=self.name, Key=key)
            assert r["ContentLength"] == len(cur.body) and r["ETag"] == cur.etag
        elif how == "range" and cur.body:
            a %= len(cur.body)
            end = min(a + n, len(cur.body) - 1)
            r = self.s3.get_object(Bucket=self.name, Key=key, Range=f"bytes={a}-{a + n}")
            assert r["Body"].read() == cur.body[a:end + 1]
            assert r["ContentRange"] == f"bytes {a}-{end}/{len(cur.body)}"
        else:
            r = self.s3.get_object(Bucket=self.name, Key=key)
            assert r["Body"].read() == cur.body and r["ETag"] == cur.etag
        assert r["Metadata"] == cur.meta
        # never versioned: no header; else the id, null too (versitygw#2165)
        assert r.get("VersionId") == (None if self.state == "off" else cur.vid)

    @rule(key=keys, pick=st.integers(min_value=0))
    def get_version(self, key: str, pick: int) -> None:
        """GET by version id: its bytes, 405 for a delete marker, 404 for another key's."""
        vid = self.vids[pick % len(self.vids)]
        mine = next((v for v in self.objects.get(key, []) if v.vid == vid), None)
        call = lambda: self.s3.get_object(Bucket=self.name, Key=key, VersionId=vid)  # noqa: E731
        if mine is None:
            assert _expect_error(call) == (404, "NoSuchVersion")
        elif mine.body is None:
            assert _expect_error(call) == (405, "MethodNotAllowed")
        else:
            r = call()
            assert r["Body"].read() == mine.body
            assert r.get("VersionId", "null" if self.state == "off" else None) == vid
            assert r["Metadata"] == mine.meta

    def listed(self, prefix: str, delimiter: str, after: str = "",
               versions: bool = False) -> tuple[list[str], list[str]]:
        """The keys and common prefixes a listing must give (sorted by UTF-8 bytes)."""
        want_keys, want_prefixes = [], set()
        for k in sorted(self.objects, key=utf8):
            if not k.startswith(prefix) or utf8(k) <= utf8(after):
                continue
            if not versions and self.current(k) is None:
                continue
            rest = k[len(prefix):]
            if delimiter and delimiter in rest:
                want_prefixes.add(prefix + rest[: rest.index(delimiter) + len(delimiter)])
            else:
                want_keys.append(k)
        return want_keys, sorted(want_prefixes, key=utf8)

    @rule(prefix=st.text(st.sampled_from(ALPHABET), max_size=2),
          delimiter=st.sampled_from(["", "/", ".", "\x00", "//"]), page=st.integers(1, 3),
          v1=st.booleans(), after=st.sampled_from(["", ".", "/", "e\u0301"]))
    def list_objects(self, prefix: str, delimiter: str, page: int, v1: bool,
                     after: str) -> None:
        """V1 (markers) or V2 (continuation, StartAfter), both in pages of 1-3."""
        kw: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix, "Delimiter": delimiter,
                              "PaginationConfig": {"PageSize": page}}
        if not v1 and after:
            kw["StartAfter"] = after
        pages = self.s3.get_paginator("list_objects" if v1 else "list_objects_v2").paginate(**kw)
        got_keys: list[tuple[str, int, str]] = []
        got_prefixes: list[str] = []
        for p in pages:
            got_keys += [(o["Key"], o["Size"], o["ETag"]) for o in p.get("Contents", [])]
            got_prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
        want_keys, want_prefixes = self.listed(prefix, delimiter, "" if v1 else after)
        want = []
        for k in want_keys:
            cur = self.current(k)
            assert cur is not None and cur.body is not None
            want.append((k, len(cur.body), cur.etag))
        assert got_keys == want
        if not after or v1:
            assert got_prefixes == want_prefixes
        else:  # a prefix that sorts before StartAfter but holds later keys is S3's business
            assert set(got_prefixes) <= set(self.listed(prefix, delimiter)[1])

    @rule(prefix=st.text(st.sampled_from(ALPHABET), max_size=2),
          delimiter=st.sampled_from(["", "/", ".", "\x00"]), page=st.integers(1, 3))
    def list_versions(self, prefix: str, delimiter: str, page: int) -> None:
        pages = self.s3.get_paginator("list_object_versions").paginate(
            Bucket=self.name, Prefix=prefix, Delimiter=delimiter,
            PaginationConfig={"PageSize": page})
        got_versions, got_markers, got_prefixes = [], [], []
        for p in pages:
            got_versions += [(v["Key"], v["VersionId"], v["IsLatest"], v["ETag"]) for v in
                             p.get("Versions", [])]
            got_markers += [(v["Key"], v["VersionId"], v["IsLatest"], None) for v in
                            p.get("DeleteMarkers", [])]
            got_prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
        want_keys, want_prefixes = self.listed(prefix, delimiter, versions=True)
        want = [(k, v.vid, i == 0, v.etag if v.body is not None else None)
                for k in want_keys for i, v in enumerate(reversed(self.objects[k]))]
        assert got_versions == [w for w in want if w[3] is not None]
        assert got_markers == [w for w in want if w[3] is None]
        assert got_prefixes == want_prefixes



def test_list_object_versions_applies_the_delimiter(cluster: LocalCluster) -> None:
    """ListObjectVersions with a delimiter: keys holding it after the prefix come back once,
    as a common prefix counted in the page (it was accepted and ignored: every version of
    every key was listed). Pages of one, a null version written before versioning was
    enabled, a delete marker, and a key marker inside a common prefix."""
    s3 = cluster.client()
    name = "mv-delim-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="n/old", Body=b"null version only")
    s3.put_object(Bucket=name, Key="top", Body=b"t0")
    want_unversioned = (["top"], ["n/"])
    for v in (False, True):
        if v:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            for key in ("a/1", "a/2", "b", "c/x/y", "top"):
                s3.put_object(Bucket=name, Key=key, Body=key.encode())
            s3.delete_object(Bucket=name, Key="b")
        for page in (1, 2, 1000):
            keys, prefixes = [], []
            for p in s3.get_paginator("list_object_versions").paginate(
                    Bucket=name, Delimiter="/", PaginationConfig={"PageSize": page}):
                assert p["Delimiter"] == "/"
                keys += [x["Key"] for x in p.get("Versions", []) + p.get("DeleteMarkers", [])]
                prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
            if v:
                assert sorted(keys) == ["b", "b", "top", "top"], (page, keys)
                assert prefixes == ["a/", "c/", "n/"], (page, prefixes)
            else:
                assert (keys, prefixes) == want_unversioned, page
    r = s3.list_object_versions(Bucket=name, Delimiter="/", KeyMarker="a/1")
    assert [c["Prefix"] for c in r.get("CommonPrefixes", [])] == ["c/", "n/"]
    r = s3.list_object_versions(Bucket=name, Delimiter="/", Prefix="c/")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["c/x/"] and "Versions" not in r
    r = s3.list_object_versions(Bucket=name, Delimiter="/", MaxKeys=2)
    assert r["IsTruncated"] and [c["Prefix"] for c in r["CommonPrefixes"]] == ["a/"]
    assert r["NextKeyMarker"] == "b" and r["NextVersionIdMarker"]


def _expect_error(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call()
    return _err(e.value)


EXAMPLES = int(os.environ.get("S3_MODEL_EXAMPLES", "3"))
STEPS = int(os.environ.get("S3_MODEL_STEPS", "15"))


def test_s3_versions_match_their_model(cluster: LocalCluster) -> None:
    VersionsModel.s3 = cluster.client()
    VersionsModel.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    VersionsModel.TestCase().runTest()
