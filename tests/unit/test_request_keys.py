"""The S3 pipeline keeps its per-request state under typed keys (gateway/s3/request_keys.py):
aiohttp 3.14 warns (NotAppKeyWarning) on every string key it has not seen before, and the
test output carried those warnings. The real pipeline over simulated nodes, driven by boto3."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, sim_s3


async def test_the_s3_pipeline_sets_no_string_keys(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # aiohttp warns once per key and process: forget what earlier tests set
    monkeypatch.setattr(web.BaseRequest, "_seen_str_keys", set())
    monkeypatch.setattr(web.StreamResponse, "_seen_str_keys", set())
    cfg = sim_config(tmp_path, 1024)
    async with sim_s3(tmp_path, cfg, SimNodes(list(cfg.nodes)), "b") as s3:
        def requests() -> None:
            s3.put_object(Bucket="b", Key="small", Body=b"x" * 10)
            s3.put_object(Bucket="b", Key="big", Body=b"y" * 200_000)
            assert s3.get_object(Bucket="b", Key="big")["Body"].read() == b"y" * 200_000
            s3.list_objects_v2(Bucket="b", FetchOwner=True)  # the listing's owners
            s3.delete_objects(Bucket="b", Delete={"Objects": [{"Key": "small"}]})  # its batch
            with pytest.raises(ClientError):  # an error code
                s3.get_object(Bucket="b", Key="missing")

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", web.NotAppKeyWarning)
            await asyncio.to_thread(requests)
    assert [str(w.message) for w in seen if w.category is web.NotAppKeyWarning] == []
