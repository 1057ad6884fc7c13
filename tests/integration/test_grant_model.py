"""Who may read what across tenants, against a model: random sequences of writes by three
tenants into one tenant's bucket (canned ACLs and grants), bucket ACL grants, and bucket
policies (Allow or Deny of s3:GetObject to one tenant or everyone), with reads (GET and
HEAD) by every tenant and anonymously after each step. The model is AWS's rules: the bucket
policy grants only on the bucket owner's objects (or to the object's owner), an object's
ACL grants reads of it, an explicit Deny wins, and a missing key is 404 only to who may
list the bucket, else 403."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.integration.cluster import LocalCluster, fetch

TENANTS = ("a", "b", "c")  # `a` owns the bucket
READERS = (*TENANTS, None)  # None: anonymous
KEYS = ("k0", "k1")
ACLS = ("private", "bucket-owner-read", "public-read", "grant:a", "grant:b", "grant:c")
ALL = "*"


@dataclass
class Obj:
    owner: str
    readers: set[str]  # tenants whose READ the ACL grants, "*" for AllUsers
    body: bytes


@dataclass
class Model:
    objects: dict[str, Obj] = field(default_factory=dict)
    bucket_read: set[str] = field(default_factory=set)
    bucket_write: set[str] = field(default_factory=set)
    allow: set[str] = field(default_factory=set)  # policy Allow s3:GetObject principals
    deny: set[str] = field(default_factory=set)  # policy Deny s3:GetObject principals

    def read(self, reader: str | None, key: str) -> int:
        """The status a GET of `key` by `reader` answers."""
        def names(ps: set[str]) -> bool:
            return ALL in ps or (reader is not None and reader in ps)

        if names(self.deny):
            return 403
        obj = self.objects.get(key)
        if obj is None:
            return 404 if reader == "a" or names(self.bucket_read) else 403
        if reader == "a" and obj.owner == "a":
            return 200
        if reader != "a" and names(self.allow) and obj.owner in ("a", reader):
            return 200
        return 200 if names(obj.readers) else 403


class GrantModel(RuleBasedStateMachine):
    cl: dict[str, Any] = {}
    ids: dict[str, str] = {}
    endpoint = ""

    @initialize()
    def fresh_bucket(self) -> None:
        self.bucket = f"gm-{uuid.uuid4().hex[:12]}"
        self.cl["a"].create_bucket(Bucket=self.bucket)
        self.model = Model()
        self.n = 0

    @rule(writer=st.sampled_from(TENANTS), key=st.sampled_from(KEYS),
          acl=st.sampled_from(ACLS))
    def put(self, writer: str, key: str, acl: str) -> None:
        self.n += 1
        body = f"{writer} {key} {self.n}".encode()
        extra: dict[str, str] = ({"GrantRead": f"id={self.ids[acl[6:]]}"}
                                 if acl.startswith("grant:") else {"ACL": acl})
        allowed = writer == "a" or writer in self.model.bucket_write
        try:
            self.cl[writer].put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        except ClientError as e:
            assert not allowed, (writer, key, acl, e.response)
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
            return
        assert allowed, (writer, key, acl)
        readers = {"private": {writer}, "bucket-owner-read": {writer, "a"},
                   "public-read": {writer, ALL}}.get(acl) or {acl[6:]}
        self.model.objects[key] = Obj(writer, readers, body)

    @rule(read_to=st.sampled_from((None, "b", "c")), write_to=st.sampled_from((None, "b", "c")))
    def bucket_acl(self, read_to: str | None, write_to: str | None) -> None:
        grants: dict[str, str] = {"GrantFullControl": f"id={self.ids['a']}"}
        if read_to:
            grants["GrantRead"] = f"id={self.ids[read_to]}"
        if write_to:
            grants["GrantWrite"] = f"id={self.ids[write_to]}"
        self.cl["a"].put_bucket_acl(Bucket=self.bucket, **grants)
        self.model.bucket_read = {read_to} if read_to else set()
        self.model.bucket_write = {write_to} if write_to else set()

    @rule(allow=st.sampled_from((None, "a", "b", "c", ALL)),
          deny=st.sampled_from((None, "b", "c")))
    def policy(self, allow: str | None, deny: str | None) -> None:
        sts = []
        for effect, who in (("Allow", allow), ("Deny", deny)):
            if who is None:
                continue
            principal = "*" if who == ALL else {"AWS": f"arn:aws:iam::{self.ids[who]}:root"}
            sts.append({"Effect": effect, "Principal": principal, "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{self.bucket}/*"})
        if sts:
            self.cl["a"].put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(
                {"Version": "2012-10-17", "Statement": sts}))
        else:
            self.cl["a"].delete_bucket_policy(Bucket=self.bucket)
        self.model.allow = {allow} if allow else set()
        self.model.deny = {deny} if deny else set()

    @invariant()
    def every_reader_sees_what_the_model_allows(self) -> None:
        if not hasattr(self, "model"):
            return
        for key in KEYS:
            obj = self.model.objects.get(key)
            for reader in READERS:
                want = self.model.read(reader, key)
                got, body = self._get(reader, key)
                assert got == want, (reader, key, got, want, self.model)
                if got == 200:
                    assert obj is not None and body == obj.body
                elif obj is not None:
                    assert obj.body not in body
                head = self._head(reader, key)
                assert head == want, ("HEAD", reader, key, head, want, self.model)

    def _get(self, reader: str | None, key: str) -> tuple[int, bytes]:
        if reader is None:
            return fetch(f"{self.endpoint}/{self.bucket}/{key}")
        try:
            r = self.cl[reader].get_object(Bucket=self.bucket, Key=key)
            return 200, r["Body"].read()
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], str(e.response).encode()

    def _head(self, reader: str | None, key: str) -> int:
        if reader is None:
            return fetch(f"{self.endpoint}/{self.bucket}/{key}", "HEAD")[0]
        try:
            self.cl[reader].head_object(Bucket=self.bucket, Key=key)
            return 200
        except ClientError as e:
            return int(e.response["ResponseMetadata"]["HTTPStatusCode"])


EXAMPLES = int(os.environ.get("GRANT_MODEL_EXAMPLES", "8"))
STEPS = int(os.environ.get("GRANT_MODEL_STEPS", "10"))


def test_cross_tenant_reads_match_the_model(cluster: LocalCluster) -> None:
    tag = uuid.uuid4().hex[:8]
    GrantModel.ids = {t: t * 56 + tag for t in TENANTS}
    GrantModel.cl = {t: cluster.tenant_client(f"gm-{t}-{tag}",
                                              {"canonical_id": GrantModel.ids[t]})
                     for t in TENANTS}
    GrantModel.endpoint = cluster.endpoint
    GrantModel.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    GrantModel.TestCase().runTest()
