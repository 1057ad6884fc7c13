"""A PutObject decided on the gateway's cached bucket record (etcd) runs again on a fresh
record only after an error that the stale record may have caused and that was raised
before anything was committed: never after a metadata store error, whose commit may have
been applied (a second run would commit a second version whose first one's stripes were
already queued for collection)."""

from __future__ import annotations

from gateway.s3.errors import S3Error
from gateway.s3.server import REFUSALS
from storage import errors as se
from storage.metadata.etcd import EtcdError


def test_refusals_and_stale_commits_run_again() -> None:
    for exc in (se.BucketChanged("b"), S3Error("AccessDenied"), se.BucketNotFound("b"),
                se.AccessDenied("no"), se.InvalidInput("bad")):
        assert isinstance(exc, REFUSALS), exc


def test_a_metadata_or_storage_failure_is_answered_as_it_is() -> None:
    for exc in (EtcdError("timeout after the txn was sent"), TimeoutError(), OSError(),
                se.QuorumNotReached(4, 2, 6, ["down"])):
        assert not isinstance(exc, REFUSALS), exc
