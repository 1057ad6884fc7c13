"""Outside-attacker checks on the S3 gateway (session 2 features): inputs a tenant controls that
must never turn into a 500."""

from __future__ import annotations

import uuid

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
