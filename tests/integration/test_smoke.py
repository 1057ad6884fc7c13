"""The walking skeleton: boto3 against a real cluster."""

import os


def test_put_get_roundtrip(s3) -> None:
    s3.create_bucket(Bucket="smoke-bucket")
    data = os.urandom(3 * 1024 * 1024 + 17)
    s3.put_object(Bucket="smoke-bucket", Key="a/b", Body=data)
    assert s3.get_object(Bucket="smoke-bucket", Key="a/b")["Body"].read() == data
