"""The chaos workload's retried completion. A retry answered NoSuchUpload was taken as
"an earlier attempt completed it" without looking: a store that lost the completion (the
upload gone, its object never made) passed. Now the workload checks the key's ETag: the
upload's multipart ETag is an acknowledgement, anything else a loss (unless another write
to the key came between). The S3 here is a small in-memory stand-in with the planted bug;
the workload is the real one."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ops.chaos import Model, Report, Workload, content, digest, multipart_etag


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": 404}},
                       "op")


class StandInS3:
    """Uploads and objects in dicts. The first completion's answer never arrives (a
    dropped connection); `loses` plants the bug: that completion drops the upload without
    making its object."""

    def __init__(self, loses: bool) -> None:
        self.loses = loses
        self.uploads: dict[str, bytes] = {}
        self.objects: dict[str, str] = {}  # key -> ETag
        self.completions = 0

    def list_parts(self, UploadId: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        if UploadId not in self.uploads:
            raise _error("NoSuchUpload")
        return {"Parts": [{"PartNumber": 1, "ETag": '"p1"'}, {"PartNumber": 2, "ETag": '"p2"'}]}

    def complete_multipart_upload(self, Key: str, UploadId: str,  # noqa: N803
                                  **_: Any) -> dict[str, Any]:
        if UploadId not in self.uploads:
            raise _error("NoSuchUpload")
        body = self.uploads.pop(UploadId)
        self.completions += 1
        if not self.loses:
            self.objects[Key] = f'"{multipart_etag(body)}"'
        if self.completions == 1:
            raise EndpointConnectionError(endpoint_url="http://gateway")
        return {}

    def head_object(self, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        if Key not in self.objects:
            raise _error("404")
        return {"ETag": self.objects[Key]}


class _Cluster:
    def __init__(self, s3: StandInS3) -> None:
        self._s3 = s3

    def s3(self, **_: Any) -> StandInS3:
        return self._s3


def _run(loses: bool) -> tuple[Report, Model, str, bytes]:
    s3 = StandInS3(loses)
    report, model = Report(), Model()
    wl = Workload(_Cluster(s3), 7, report, model)  # type: ignore[arg-type]
    body = content(7, "k001", 1, 5 * 2**20 + 300)
    s3.uploads["up1"] = body
    wl.open.append(("k001", "up1", body))
    with pytest.raises(EndpointConnectionError):
        wl._complete(s3, "k001", "up1", body)  # the answer is lost
    wl.finish()  # the retry: NoSuchUpload
    assert wl.open == []
    return report, model, "k001", body


def test_completion_lost_by_the_store_is_a_loss() -> None:
    report, model, key, _ = _run(loses=True)
    assert len(report.lost) == 1 and "gone but its object is not there" in report.lost[0]
    assert model.allows(key, None)


def test_completion_whose_answer_was_lost_is_acknowledged() -> None:
    report, model, key, body = _run(loses=False)
    assert report.lost == []
    assert model.possible[key] == {digest(body)}  # acknowledged: the body, nothing else
    assert report.ops["completed-earlier"] == 1


def test_a_write_in_between_leaves_the_key_unsure() -> None:
    """Another write to the key between the attempts may have replaced the object: no
    verdict (the model keeps both states), no false loss."""
    s3 = StandInS3(loses=True)
    report, model = Report(), Model()
    wl = Workload(_Cluster(s3), 7, report, model)  # type: ignore[arg-type]
    body = content(7, "k001", 1, 5 * 2**20)
    s3.uploads["up1"] = body
    wl.open.append(("k001", "up1", body))
    with pytest.raises(EndpointConnectionError):
        wl._complete(s3, "k001", "up1", body)
    wl.writes["k001"] += 1  # a PUT or DELETE of the key by the workload
    wl.finish()
    assert report.lost == [] and model.allows("k001", digest(body))
