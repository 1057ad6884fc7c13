"""Outside-attacker checks on the S3 gateway (session 2 features): inputs a tenant controls that
must never turn into a 500."""

from __future__ import annotations

import threading
import uuid

from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster


def test_lifecycle_days_beyond_year_9999_do_not_break_puts(cluster: LocalCluster) -> None:
    """A rule with Days=2147483647 (valid XML, an int32) puts the expiry past the last date an
    HTTP header can name: PUT and CreateMultipartUpload still succeed (the date is capped)."""
    s3 = cluster.client()
    bucket = f"atk-lc-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    big = 2147483647
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "far", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Expiration": {"Days": big}},
        {"ID": "abort", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": big}}]})
    r = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert "9999" in r["ResponseMetadata"]["HTTPHeaders"]["x-amz-expiration"]
    assert "9999" in s3.head_object(Bucket=bucket, Key="k")["ResponseMetadata"][
        "HTTPHeaders"]["x-amz-expiration"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="m")
    assert "9999" in up["ResponseMetadata"]["HTTPHeaders"]["x-amz-abort-date"]
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=up["UploadId"])


def test_put_racing_delete_bucket_never_outlives_the_bucket(cluster: LocalCluster) -> None:
    """PUTs racing a DeleteBucket: either the delete fails (BucketNotEmpty) or no PUT
    succeeded; an object whose PUT got 200 never survives its bucket (it used to, and showed
    up in the next bucket of that name, whoever created it)."""
    s3 = cluster.client(max_pool_connections=16)
    for _ in range(15):
        bucket = f"atk-race-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        go = threading.Barrier(7)
        puts: list[str] = []

        def put(i: int, bucket: str = bucket, go: threading.Barrier = go,
                puts: list[str] = puts) -> None:
            go.wait()
            try:
                s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x" * 100)
                puts.append("ok")
            except ClientError as exc:
                puts.append(exc.response["Error"]["Code"])

        threads = [threading.Thread(target=put, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        go.wait()
        try:
            s3.delete_bucket(Bucket=bucket)
            deleted = True
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "BucketNotEmpty"
            deleted = False
        for t in threads:
            t.join()
        assert set(puts) <= {"ok", "NoSuchBucket", "OperationAborted"}, puts
        if deleted:
            assert "ok" not in puts, puts
            s3.create_bucket(Bucket=bucket)
            assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
        s3.delete_bucket(Bucket=bucket)
