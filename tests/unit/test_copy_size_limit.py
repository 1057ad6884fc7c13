"""CopyObject and UploadPartCopy share one size check (`check_copy_size`, applied before a
byte is copied): a source, or a part's range, of 5 GiB exactly is taken; one byte more is 400
InvalidRequest "The specified copy source is larger than the maximum allowable size for a
copy source: 5368709120", S3's answer to both (rclone#2375 for CopyObject, s3tar#26 for
UploadPartCopy). Checked here at the boundary, where an integration test would have to
store 5 GiB first."""

from __future__ import annotations

import pytest

from gateway.s3.errors import S3Error
from gateway.s3.handlers.copy import check_copy_size

GIB5 = 5 * 1024**3


@pytest.mark.parametrize("size", [0, 1, GIB5 - 1, GIB5])
def test_up_to_5_gib_is_taken(size: int) -> None:
    check_copy_size(size)


@pytest.mark.parametrize("size", [GIB5 + 1, 2 * GIB5, 5 * 1024**4])
def test_past_5_gib_is_s3s_invalid_request(size: int) -> None:
    with pytest.raises(S3Error) as e:
        check_copy_size(size)
    assert (e.value.code, e.value.status, str(e.value.message)) == (
        "InvalidRequest", 400, "The specified copy source is larger than the maximum "
        "allowable size for a copy source: 5368709120")
