"""ops.botoconfig.no_retries: a client that must see every answer makes exactly one attempt
(botocore's `retries={"max_attempts": 1}` made two: it counts retries, and the retry of a
request whose answer was lost showed the caller only the second answer)."""

from __future__ import annotations

import socket
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from ops.botoconfig import no_retries


def test_a_no_retries_client_sends_a_refused_request_once() -> None:
    with socket.socket() as s:  # a loopback port bound but not listening: connect refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="AK", aws_secret_access_key="SK",
                          config=no_retries(connect_timeout=2, s3={"addressing_style": "path"}))
        sent: list[Any] = []
        s3.meta.events.register("before-send", lambda request, **_: sent.append(request))
        with pytest.raises(EndpointConnectionError):
            s3.list_buckets()
    assert len(sent) == 1
    assert s3.meta.config.retries["total_max_attempts"] == 1
