"""KMS key lifecycle (disable, enable, scheduled deletion), with the CLI and boto3 on a real
cluster: a key that is not Enabled makes SSE-KMS writes and reads of its objects fail with
AWS's errors, re-enabling restores them, a deleted key's objects are unreadable for good, and
a restored archive copy stays bound to its KMS key.

The cluster runs with 10-second archive days so an Expedited restore completes at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.admincli import CliError, admin_request
from storage.keyspace import kms_key_key
from storage.kms import KmsKey
from tests.integration.cluster import LocalCluster, wait_for
from tests.integration.test_kms import create_key, error, list_keys, new_tenant


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("kmslife")),
                     up_args=["--day-seconds", "10"]).start()
    yield c
    c.stop()


def kms(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", "kms", *args],
                          env={**os.environ, **c.env}, capture_output=True, text=True,
                          timeout=60)


def state_of(c: LocalCluster, tenant: str, key_id: str) -> str:
    return next(k["state"] for k in list_keys(c, tenant) if k["key_id"] == key_id)


def test_disable_and_enable_stop_and_restore_every_use(kc: LocalCluster) -> None:
    tenant, s3 = new_tenant(kc, "kmsoff")
    k = create_key(kc, tenant, "app")
    arn = k["arn"]
    kms_put = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/app"}
    small, big = b"small", os.urandom(300_000)
    s3.put_object(Bucket=tenant, Key="small", Body=small, **kms_put)
    s3.put_object(Bucket=tenant, Key="big", Body=big, **kms_put)
    s3.put_object(Bucket=tenant, Key="plain", Body=b"plain")
    up = s3.create_multipart_upload(Bucket=tenant, Key="mp", **kms_put)["UploadId"]
    s3.put_bucket_encryption(Bucket=tenant, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                "KMSMasterKeyID": arn}}]})

    r = kms(kc, "disable", "app", "--tenant", tenant)
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "ID", "ALIASES"] and "Disabled" in row.split()
    assert state_of(kc, tenant, k["key_id"]) == "Disabled"
    disabled = (400, "KMS.DisabledException", f"{arn} is disabled.")
    for key in ("small", "big"):
        assert error(s3.get_object, Bucket=tenant, Key=key) == disabled
        assert s3.head_object(Bucket=tenant, Key=key)["SSEKMSKeyId"] == arn  # no decryption
    assert error(s3.put_object, Bucket=tenant, Key="n", Body=b"x", **kms_put) == disabled
    assert error(s3.put_object, Bucket=tenant, Key="n", Body=b"x") == disabled  # bucket default
    assert error(s3.copy_object, Bucket=tenant, Key="c", CopySource=f"{tenant}/small",
                 ServerSideEncryption="AES256") == disabled
    assert error(s3.upload_part, Bucket=tenant, Key="mp", UploadId=up, PartNumber=1,
                 Body=b"p") == disabled
    assert s3.get_object(Bucket=tenant, Key="plain")["Body"].read() == b"plain"
    # Disabling twice is allowed (as AWS); enabling restores every use.
    assert kms(kc, "disable", k["key_id"], "--tenant", tenant).returncode == 0
    r = kms(kc, "enable", arn, "--tenant", tenant, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "Enabled", r.stderr
    assert s3.get_object(Bucket=tenant, Key="small")["Body"].read() == small
    assert s3.get_object(Bucket=tenant, Key="big")["Body"].read() == big
    s3.upload_part(Bucket=tenant, Key="mp", UploadId=up, PartNumber=1, Body=b"p")
    assert s3.put_object(Bucket=tenant, Key="n", Body=b"x")["SSEKMSKeyId"] == arn
    # Refusals: the managed default key, an unknown key; each change is audited.
    s3.put_object(Bucket=tenant, Key="d", Body=b"d", ServerSideEncryption="aws:kms")
    r = kms(kc, "disable", "alias/aws/s3", "--tenant", tenant)
    assert r.returncode == 1 and "managed" in r.stderr, r.stderr
    r = kms(kc, "disable", "nope", "--tenant", tenant)
    assert r.returncode == 1 and "NotFoundException" in r.stderr, r.stderr
    entries = admin_request("GET", f"/audit?tenant={tenant}&action=kms.", env=kc.env)["entries"]
    seen = [(e["action"], e["result"], e.get("state")) for e in reversed(entries)]
    assert [s for s in seen if s[0] in ("kms.disable", "kms.enable")] == [
        ("kms.disable", "ok", "Disabled"), ("kms.disable", "ok", "Disabled"),
        ("kms.enable", "ok", "Enabled"), ("kms.disable", "error:InvalidArgument", None),
        ("kms.disable", "error:NotFoundException", None)], seen


def test_scheduled_deletion_cancel_and_deletion(kc: LocalCluster) -> None:
    tenant, s3 = new_tenant(kc, "kmsdel")
    k = create_key(kc, tenant, "gone")
    arn = k["arn"]
    s3.put_object(Bucket=tenant, Key="o", Body=b"secret", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=k["key_id"])
    r = kms(kc, "delete", "gone", "--tenant", tenant, "--days", "3")
    assert r.returncode == 2 and "argument --days: 3 is not from 7 to 30" in r.stderr, r.stderr
    with pytest.raises(CliError, match="7 to 30.*ValidationException"):  # the API checks too
        admin_request("POST", f"/tenants/{tenant}/kms-keys/schedule-deletion",
                      {"key": "gone", "pending_window_days": 3}, env=kc.env)
    r = kms(kc, "delete", "gone", "--tenant", tenant, "--days", "7", "--json")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert view["state"] == "PendingDeletion"
    assert abs(view["deletion_date"] - (time.time() + 7 * 86400)) < 600
    pending = (400, "KMS.KMSInvalidStateException", f"{arn} is pending deletion.")
    assert error(s3.get_object, Bucket=tenant, Key="o") == pending
    assert error(s3.put_object, Bucket=tenant, Key="n", Body=b"x", ServerSideEncryption="aws:kms",
                 SSEKMSKeyId="alias/gone") == pending
    for args in (("enable", "gone"), ("delete", "gone")):
        r = kms(kc, *args, "--tenant", tenant)
        assert r.returncode == 1 and "KMSInvalidStateException" in r.stderr, r.stderr
    # Cancelling leaves the key Disabled, as AWS KMS; enabling it makes the object readable.
    r = kms(kc, "cancel-deletion", "gone", "--tenant", tenant, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "Disabled", r.stderr
    assert error(s3.get_object, Bucket=tenant, Key="o")[:2] == (400, "KMS.DisabledException")
    assert kms(kc, "enable", "gone", "--tenant", tenant).returncode == 0
    assert s3.get_object(Bucket=tenant, Key="o")["Body"].read() == b"secret"
    # Deleted (no waiting period): the key and its alias are gone, its objects unreadable for
    # good, even by a new key that takes the alias.
    r = kms(kc, "delete", "gone", "--tenant", tenant, "--wait-s", "0")
    assert r.returncode == 0, r.stderr
    assert list_keys(kc, tenant) == []
    assert kc.db_get(kms_key_key(tenant, k["key_id"])) is None
    missing = (400, "KMS.NotFoundException", f"Key '{arn}' does not exist")
    assert error(s3.get_object, Bucket=tenant, Key="o") == missing
    again = create_key(kc, tenant, "gone")
    assert again["key_id"] != k["key_id"]
    assert error(s3.get_object, Bucket=tenant, Key="o") == missing


def test_deletion_is_carried_out_by_the_key_worker_when_due(kc: LocalCluster) -> None:
    tenant, s3 = new_tenant(kc, "kmsdue")
    k = create_key(kc, tenant, "soon")
    s3.put_object(Bucket=tenant, Key="o", Body=b"x", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId="alias/soon")
    r = kms(kc, "delete", "soon", "--tenant", tenant, "--wait-s", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "PendingDeletion"
    wait_for(lambda: kc.db_get(kms_key_key(tenant, k["key_id"])) is None,
             what="the key worker deleting the due key", timeout=180)
    assert list_keys(kc, tenant) == []
    assert error(s3.get_object, Bucket=tenant, Key="o")[:2] == (400, "KMS.NotFoundException")


def test_restored_archive_copy_stays_bound_to_its_kms_key(kc: LocalCluster) -> None:
    tenant, s3 = new_tenant(kc, "kmsres")
    k = create_key(kc, tenant, "cold")
    data = os.urandom(200_000)
    s3.put_object(Bucket=tenant, Key="o", Body=data, StorageClass="GLACIER",
                  ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/cold")
    s3.restore_object(Bucket=tenant, Key="o", RestoreRequest={
        "Days": 1, "GlacierJobParameters": {"Tier": "Expedited"}})
    wait_for(lambda: (s3.head_object(Bucket=tenant, Key="o").get("Restore") or "")
             .startswith('ongoing-request="false"'), what="the restore", timeout=180)
    assert s3.get_object(Bucket=tenant, Key="o")["Body"].read() == data
    # The copy's data key is wrapped by the KMS key under the tenant KEK, not bare.
    v = kc.manifest(tenant, "o")
    rec = KmsKey.decode(kc.db_get(kms_key_key(tenant, k["key_id"])) or b"")
    assert v.restore.get("dek") and rec.key_id == v.sse["kms_key"]
    assert kms(kc, "disable", "cold", "--tenant", tenant).returncode == 0
    assert error(s3.get_object, Bucket=tenant, Key="o")[:2] == (400, "KMS.DisabledException")
    assert kms(kc, "enable", "cold", "--tenant", tenant).returncode == 0
    assert s3.get_object(Bucket=tenant, Key="o")["Body"].read() == data
