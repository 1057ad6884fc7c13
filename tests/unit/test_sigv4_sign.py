"""The CLI's own SigV4 signer: byte-identical to botocore's S3 signer, accepted by our verifier."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.s3.sigv4 import authenticate
from gateway.s3.sigv4_sign import sign_headers

AK, SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
WHEN = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize("method,url,body", [
    ("GET", "http://127.0.0.1:9001/admin/v1/status", b""),
    ("POST", "http://127.0.0.1:9001/admin/v1/tenants", b'{"name": "acme"}'),
    ("GET", "http://127.0.0.1:9001/admin/v1/keys?tenant=a%20b&z=1", b""),
    ("DELETE", "http://h:1/admin/v1/tenants/we%2Bird", b""),
])
def test_signature_matches_botocore(method: str, url: str, body: bytes) -> None:
    hdrs = {"Content-Type": "application/json"} if body else {}
    req = AWSRequest(method=method, url=url, data=body,
                     headers={**hdrs, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    S3SigV4Auth(Credentials(AK, SK), "s3", "us-east-1").add_auth(req)
    when = datetime.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    ours = sign_headers(method, url, hdrs, body, AK, SK, now=when)
    assert ours["Authorization"] == req.headers["Authorization"]


def test_verifier_accepts_it() -> None:
    url = "http://127.0.0.1:9001/admin/v1/keys?tenant=acme"
    hdrs = sign_headers("GET", url, {}, b"", AK, SK, now=WHEN)
    res = authenticate("GET", "/admin/v1/keys", [("tenant", "acme")], hdrs,
                       lambda a: SK if a == AK else None, WHEN)
    assert res.access_key == AK and not res.anonymous


def test_admin_client_does_not_import_botocore() -> None:
    """`pip install -e .` has no botocore: the operator CLI must not need it."""
    code = ("import sys; sys.modules['botocore'] = None; sys.modules['boto3'] = None\n"
            "from ops.admincli import admin_request, CliError\n"
            "try:\n"
            "    admin_request('GET', '/status', env={'TESSERA_ADMIN_URL': 'http://127.0.0.1:1',"
            " 'TESSERA_ADMIN_ACCESS_KEY': 'a', 'TESSERA_ADMIN_SECRET_KEY': 'b'})\n"
            "except CliError as e:\n"
            "    print('cli-error', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cannot reach the admin API" in out.stdout
