"""A data directory in key layout 1 (as main at df444a3 wrote it) keeps working: the gateway
upgrades its metadata on first open, and every object, version, upload and listing reads
back through S3 (boto3, real processes).

The data directory is made by a real cluster, then its metadata is rewritten to layout 1
with df444a3's key builders (`tests/vectors/layout1.py`) while the cluster is stopped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from storage import keyspace as ks
from tests.integration.cluster import LocalCluster
from tests.vectors.layout1 import in_layout1, to_layout1

PART = 5 * 1024 * 1024


def rewrite_to_layout1(db: Path) -> int:
    """Every record of the SQLite store under its layout-1 key; returns how many."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT k, v, rev FROM kv").fetchall()
        revs = {k: rev for k, _, rev in rows}
        layout1 = to_layout1([(k, v) for k, v, _ in rows])
        new_of_old = dict(zip((o for o, _ in layout1),
                              (k for k, _, _ in rows if in_layout1(k)),
                              strict=True))
        with conn:
            conn.execute("DELETE FROM kv")
            conn.executemany("INSERT INTO kv (k, v, rev) VALUES (?, ?, ?)",
                             [(o, v, revs[new_of_old[o]]) for o, v in layout1])
        assert not conn.execute("SELECT count(*) FROM kv WHERE k = ?",
                                (ks.layout_key(),)).fetchone()[0]
        return len(layout1)
    finally:
        conn.close()


def write_everything(s3: Any) -> dict[str, Any]:
    """Objects of every kind, with keys that collided in layout 1."""
    s3.create_bucket(Bucket="plain")
    s3.put_object(Bucket="plain", Key="a", Body=b"a")
    s3.put_object(Bucket="plain", Key="a\x00b", Body=b"a-nul-b")
    s3.put_object(Bucket="plain", Key="dir/x", Body=b"x")
    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    vids = [s3.put_object(Bucket="versioned", Key="v.txt", Body=f"v{i}".encode())["VersionId"]
            for i in range(3)]
    nul_vid = s3.put_object(Bucket="versioned", Key="v.txt\x00zzz", Body=b"z")["VersionId"]
    marker = s3.delete_object(Bucket="versioned", Key="gone")["VersionId"]
    up = s3.create_multipart_upload(Bucket="plain", Key="mp\x00")["UploadId"]
    etag = s3.upload_part(Bucket="plain", Key="mp\x00", UploadId=up, PartNumber=1,
                          Body=b"p" * PART)["ETag"]
    done = s3.create_multipart_upload(Bucket="plain", Key="done")["UploadId"]
    e1 = s3.upload_part(Bucket="plain", Key="done", UploadId=done, PartNumber=1,
                        Body=b"d")["ETag"]
    s3.complete_multipart_upload(Bucket="plain", Key="done", UploadId=done, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}]})
    return {"vids": vids, "nul_vid": nul_vid, "marker": marker, "upload": up, "etag": etag}


def test_layout1_data_directory_upgrades_on_open(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "data").start()
    try:
        state = write_everything(c.client())
    finally:
        c.stop()
    assert rewrite_to_layout1(c.data / "meta" / "tessera.db") > 20
    c.start()
    try:
        s3 = c.client()
        got = {k: s3.get_object(Bucket="plain", Key=k)["Body"].read()
               for k in ("a", "a\x00b", "dir/x", "done")}
        assert got == {"a": b"a", "a\x00b": b"a-nul-b", "dir/x": b"x", "done": b"d"}
        listed = s3.list_objects_v2(Bucket="plain", Delimiter="/")
        assert [o["Key"] for o in listed["Contents"]] == ["a", "a\x00b", "done"]
        assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["dir/"]
        for i, vid in enumerate(state["vids"]):
            body = s3.get_object(Bucket="versioned", Key="v.txt", VersionId=vid)["Body"].read()
            assert body == f"v{i}".encode()
        assert s3.get_object(Bucket="versioned", Key="v.txt\x00zzz",
                             VersionId=state["nul_vid"])["Body"].read() == b"z"
        versions = s3.list_object_versions(Bucket="versioned")
        assert [v["VersionId"] for v in versions["Versions"]] == [
            *reversed(state["vids"]), state["nul_vid"]]
        assert [m["VersionId"] for m in versions["DeleteMarkers"]] == [state["marker"]]
        # the upload in progress completes after the upgrade
        s3.complete_multipart_upload(
            Bucket="plain", Key="mp\x00", UploadId=state["upload"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": state["etag"]}]})
        assert s3.get_object(Bucket="plain", Key="mp\x00")["ContentLength"] == PART
        s3.put_object(Bucket="plain", Key="after", Body=b"new")  # and writes go on
        assert s3.get_object(Bucket="plain", Key="after")["Body"].read() == b"new"
    finally:
        c.stop()
    conn = sqlite3.connect(c.data / "meta" / "tessera.db")
    try:
        left = conn.execute("SELECT k FROM kv").fetchall()
    finally:
        conn.close()
    assert all("/" not in ks.unpack(k)[0] for (k,) in left)  # no layout-1 key is left
