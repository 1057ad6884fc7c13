"""Outside-attacker checks of "accepted means applied": an operation, header or parameter
AWS documents either takes effect as AWS defines it or is refused with AWS's error, never
accepted and ignored. Driven by real boto3 calls (botocore's own model of each request)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client()
    bucket = f"atk-api-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    return {"s3": s3, "bucket": bucket, "cluster": cluster}


def _err(call: Callable[..., Any], **kw: Any) -> tuple[int, str]:
    try:
        call(**kw)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]
    raise AssertionError(f"{call} was accepted")


def _signed_put(w: dict[str, Any], path: str, body: bytes) -> requests.Response:
    """A SigV4-signed PUT of `body` as sent (botocore would rebuild it from its model)."""
    env = w["cluster"].env
    headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
               "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    req = AWSRequest(method="PUT", url=w["cluster"].endpoint + path, data=body, headers=headers)
    S3SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "s3",
                env["AWS_DEFAULT_REGION"]).add_auth(req)
    prepared = req.prepare()
    return requests.put(prepared.url, data=body, headers=dict(prepared.headers), timeout=60)


def _body(w: dict[str, Any], key: str) -> bytes:
    return w["s3"].get_object(Bucket=w["bucket"], Key=key)["Body"].read()


@pytest.mark.parametrize("op", ["rename_object", "update_object_encryption"])
def test_object_operations_we_lack_are_refused_not_a_put(w: dict[str, Any], op: str) -> None:
    """RenameObject (`PUT ?renameObject`) and UpdateObjectEncryption (`PUT ?encryption`)
    were routed as PutObject: a rename replaced the object with an empty one and a change
    of encryption replaced it with the request's XML, both answered 200. 501 now, the
    object untouched."""
    s3, b = w["s3"], w["bucket"]
    s3.put_object(Bucket=b, Key=op, Body=b"kept")
    kw: dict[str, Any] = {"RenameSource": f"{b}/elsewhere"} if op == "rename_object" else {
        "ObjectEncryption": {"SSEKMS": {"KMSKeyArn": "arn:aws:kms:us-east-1:1:key/k"}}}
    assert _err(getattr(s3, op), Bucket=b, Key=op, **kw) == (501, "NotImplemented")
    assert _body(w, op) == b"kept"


@pytest.mark.parametrize(("op", "kw"), [
    ("put_bucket_abac", {"AbacStatus": {"Status": "Enabled"}}),
    ("get_bucket_abac", {}),
    ("create_session", {}),
    ("get_bucket_metadata_configuration", {}),
    ("delete_bucket_metadata_configuration", {}),
])
def test_bucket_operations_we_lack_are_refused_not_another(w: dict[str, Any], op: str,
                                                           kw: dict[str, Any]) -> None:
    """GetBucketAbac, CreateSession and GetBucketMetadataConfiguration were answered with
    a ListObjects page (an empty AbacStatus: "not enabled" by omission), PutBucketAbac as a
    CreateBucket: 501 NotImplemented now."""
    assert _err(getattr(w["s3"], op), Bucket=w["bucket"], **kw) == (501, "NotImplemented")


def _absent(w: dict[str, Any], key: str) -> bool:
    return _err(w["s3"].head_object, Bucket=w["bucket"], Key=key)[0] == 404


UNCHECKED = {"SHA512": hashlib.sha512, "MD5": hashlib.md5}


@pytest.mark.parametrize("alg", ["SHA512", "MD5", "XXHASH64", "XXHASH3", "XXHASH128"])
def test_digest_of_an_algorithm_we_do_not_compute_is_refused(w: dict[str, Any],
                                                             alg: str) -> None:
    """x-amz-checksum-sha512/-md5/-xxhash64/-xxhash3/-xxhash128 (in AWS's model since
    2025) were accepted and never compared: a wrong digest stored the object, 200. 501
    NotImplemented naming the header now (its digest cannot be checked), nothing stored,
    right or wrong, on PutObject and UploadPart."""
    s3, b = w["s3"], w["bucket"]
    digest = UNCHECKED.get(alg, hashlib.sha256)(b"abc").digest()
    for value in (base64.b64encode(digest).decode(), base64.b64encode(b"\0" * 8).decode()):
        key = f"unchecked-{alg}"
        assert _err(s3.put_object, Bucket=b, Key=key, Body=b"abc",
                    **{f"Checksum{alg}": value}) == (501, "NotImplemented")
        assert _absent(w, key)
        up = s3.create_multipart_upload(Bucket=b, Key=key)["UploadId"]
        assert _err(s3.upload_part, Bucket=b, Key=key, UploadId=up, PartNumber=1,
                    Body=b"abc", **{f"Checksum{alg}": value}) == (501, "NotImplemented")
        assert s3.list_parts(Bucket=b, Key=key, UploadId=up).get("Parts", []) == []
        s3.abort_multipart_upload(Bucket=b, Key=key, UploadId=up)


@pytest.mark.parametrize("alg", ["SHA512", "MD5", "XXHASH128"])
def test_create_multipart_upload_with_an_algorithm_we_do_not_compute(w: dict[str, Any],
                                                                    alg: str) -> None:
    """ChecksumAlgorithm=SHA512 on CreateMultipartUpload was 400 InvalidRequest while the
    same algorithm on PutObject is 501 NotImplemented: one answer now (501, no upload); an
    algorithm AWS does not know stays 400 InvalidRequest."""
    s3, b = w["s3"], w["bucket"]
    assert _err(s3.create_multipart_upload, Bucket=b, Key=f"mpu-{alg}",
                ChecksumAlgorithm=alg) == (501, "NotImplemented")
    assert not s3.list_multipart_uploads(Bucket=b).get("Uploads")

    def bogus(params: Any, **_: Any) -> None:
        params["headers"]["x-amz-checksum-algorithm"] = "FOO"

    s3.meta.events.register("before-call.s3.CreateMultipartUpload", bogus)
    try:
        assert _err(s3.create_multipart_upload, Bucket=b, Key="mpu-foo") == (
            400, "InvalidRequest")
    finally:
        s3.meta.events.unregister("before-call.s3.CreateMultipartUpload", bogus)


@pytest.mark.parametrize("alg", ["SHA512", "XXHASH64"])
def test_trailer_of_an_algorithm_we_do_not_compute_is_refused(w: dict[str, Any],
                                                              alg: str) -> None:
    """boto3's ChecksumAlgorithm=SHA512 sends the body aws-chunked with an
    x-amz-checksum-sha512 trailer: refused (501) before the body is read, nothing stored."""
    key = f"trailed-{alg}"
    assert _err(w["s3"].put_object, Bucket=w["bucket"], Key=key, Body=b"abc",
                ChecksumAlgorithm=alg) == (501, "NotImplemented")
    assert _absent(w, key)


def test_create_bucket_applies_its_tags(w: dict[str, Any]) -> None:
    """CreateBucketConfiguration's Tags were accepted and dropped: the new bucket had no
    tag set. They are the bucket's tags now, checked as PutBucketTagging checks them."""
    s3, b = w["s3"], f"atk-api-tags-{uuid.uuid4().hex[:8]}"
    tags = [{"Key": "team", "Value": "blue"}, {"Key": "cost", "Value": ""}]
    s3.create_bucket(Bucket=b, CreateBucketConfiguration={"Tags": tags})
    assert sorted(s3.get_bucket_tagging(Bucket=b)["TagSet"], key=lambda t: t["Key"]) == \
        sorted(tags, key=lambda t: t["Key"])
    bad = f"{b}-bad"
    assert _err(s3.create_bucket, Bucket=bad, CreateBucketConfiguration={
        "Tags": [{"Key": "aws:x", "Value": "1"}]}) == (400, "InvalidTag")
    assert _err(s3.head_bucket, Bucket=bad)[0] == 404


def test_repeated_create_bucket_refuses_settings_it_cannot_apply(w: dict[str, Any]) -> None:
    """us-east-1 answers a repeated CreateBucket by the owner 200 and resets the ACL (all AWS
    documents). Tags (or Object Lock / Object Ownership) sent with it were dropped after a
    200; now 409 BucketAlreadyOwnedByYou and the bucket is unchanged; a plain repeat, or one
    asking for what the bucket already has, is 200."""
    s3, b = w["s3"], f"atk-api-again-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    s3.create_bucket(Bucket=b)  # the legacy 200
    tags = [{"Key": "team", "Value": "blue"}]
    assert _err(s3.create_bucket, Bucket=b, CreateBucketConfiguration={"Tags": tags}) == (
        409, "BucketAlreadyOwnedByYou")
    assert _err(s3.get_bucket_tagging, Bucket=b) == (404, "NoSuchTagSet")
    assert _err(s3.create_bucket, Bucket=b, ObjectLockEnabledForBucket=True) == (
        409, "BucketAlreadyOwnedByYou")
    assert _err(s3.get_object_lock_configuration, Bucket=b)[0] == 404
    assert _err(s3.create_bucket, Bucket=b, ObjectOwnership="BucketOwnerEnforced") == (
        409, "BucketAlreadyOwnedByYou")
    # asking again for what the bucket already has is a plain repeat (an idempotent "ensure
    # this bucket" step re-sends its whole create): 200, nothing changed
    same = {"Bucket": f"{b}-same", "CreateBucketConfiguration": {"Tags": tags},
            "ObjectLockEnabledForBucket": True, "ObjectOwnership": "BucketOwnerEnforced"}
    s3.create_bucket(**same)
    s3.create_bucket(**same)
    assert s3.get_bucket_tagging(Bucket=same["Bucket"])["TagSet"] == tags
    assert _err(s3.create_bucket, Bucket=same["Bucket"], CreateBucketConfiguration={
        "Tags": [{"Key": "team", "Value": "red"}]}) == (409, "BucketAlreadyOwnedByYou")


@pytest.mark.parametrize("conf", [
    {"Bucket": {"DataRedundancy": "SingleAvailabilityZone", "Type": "Directory"}},
    {"Location": {"Type": "AvailabilityZone", "Name": "use1-az4"}},
])
def test_create_directory_bucket_is_refused(w: dict[str, Any], conf: dict[str, Any]) -> None:
    """A directory bucket's configuration (Bucket, Location) made a general-purpose bucket,
    200: 501 NotImplemented now, no bucket made."""
    s3, b = w["s3"], f"atk-api-dir-{uuid.uuid4().hex[:8]}"
    assert _err(s3.create_bucket, Bucket=b, CreateBucketConfiguration=conf) == (
        501, "NotImplemented")
    assert _err(s3.head_bucket, Bucket=b)[0] == 404


def _ssec(key: bytes) -> dict[str, str]:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key.decode("latin-1")}


def test_blocked_encryption_types_refuse_new_sse_c_objects(w: dict[str, Any]) -> None:
    """PutBucketEncryption's BlockedEncryptionTypes (SSE-C) was accepted and dropped: SSE-C
    uploads went on, and GetBucketEncryption did not show the block. Now it is kept, shown,
    and PutObject, CopyObject, CreateMultipartUpload and POST of a new SSE-C object are 403
    AccessDenied, as AWS documents; an existing SSE-C object stays readable with its key."""
    s3, b = w["s3"], f"atk-api-ssec-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    key = bytes(range(32))
    s3.put_object(Bucket=b, Key="old", Body=b"old", **_ssec(key))
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
            "BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}
    s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [rule]})
    got = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert got["BlockedEncryptionTypes"] == {"EncryptionType": ["SSE-C"]}
    assert _err(s3.put_object, Bucket=b, Key="new", Body=b"x", **_ssec(key)) == (
        403, "AccessDenied")
    assert _err(s3.create_multipart_upload, Bucket=b, Key="new", **_ssec(key)) == (
        403, "AccessDenied")
    assert _err(s3.copy_object, Bucket=b, Key="new", CopySource={"Bucket": b, "Key": "old"},
                CopySourceSSECustomerAlgorithm="AES256",
                CopySourceSSECustomerKey=key.decode("latin-1"), **_ssec(key)) == (
        403, "AccessDenied")
    form = s3.generate_presigned_post(b, "new", Fields={
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
        "x-amz-server-side-encryption-customer-key-MD5":
            base64.b64encode(hashlib.md5(key).digest()).decode()})
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f", b"x")},
                      timeout=60)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content
    assert _err(s3.head_object, Bucket=b, Key="new")[0] == 404
    assert s3.get_object(Bucket=b, Key="old", **_ssec(key))["Body"].read() == b"old"
    s3.put_object(Bucket=b, Key="plain", Body=b"x")  # other encryption is not blocked
    rule["BlockedEncryptionTypes"] = {"EncryptionType": ["NONE"]}
    s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [rule]})
    s3.put_object(Bucket=b, Key="new", Body=b"x", **_ssec(key))


def test_blocked_sse_c_refuses_parts_of_an_upload_begun_before(w: dict[str, Any]) -> None:
    """AWS: with SSE-C blocked, any multipart upload request that specifies SSE-C is 403
    AccessDenied. UploadPart / UploadPartCopy into an SSE-C upload created before the block
    were still stored; now refused, and accepted again once the block is lifted."""
    s3, b = w["s3"], f"atk-api-ssecmp-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    key = bytes(range(1, 33))
    s3.put_object(Bucket=b, Key="src", Body=b"s" * 10)
    up = s3.create_multipart_upload(Bucket=b, Key="mp", **_ssec(key))["UploadId"]
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
            "BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}
    s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [rule]})
    assert _err(s3.upload_part, Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=b"p",
                **_ssec(key)) == (403, "AccessDenied")
    assert _err(s3.upload_part_copy, Bucket=b, Key="mp", UploadId=up, PartNumber=1,
                CopySource={"Bucket": b, "Key": "src"}, **_ssec(key)) == (403, "AccessDenied")
    assert s3.list_parts(Bucket=b, Key="mp", UploadId=up).get("Parts", []) == []
    rule["BlockedEncryptionTypes"] = {"EncryptionType": ["NONE"]}
    s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [rule]})
    s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=b"p", **_ssec(key))
    s3.abort_multipart_upload(Bucket=b, Key="mp", UploadId=up)


def test_rule_with_only_blocked_encryption_types(w: dict[str, Any]) -> None:
    """AWS marks ApplyServerSideEncryptionByDefault optional: a rule that only blocks SSE-C
    was 400 MalformedXML. Now it is stored and returned as put (no default in it), SSE-C
    writes are 403, and a write asking for nothing gets the SSE-S3 every bucket has; a rule
    with neither a default nor blocked types is still MalformedXML."""
    s3, b = w["s3"], f"atk-api-blk-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [
        {"BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}]})
    got = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"]
    assert got == [{"BucketKeyEnabled": False,
                    "BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}]
    assert _err(s3.put_object, Bucket=b, Key="c", Body=b"x", **_ssec(bytes(range(32)))) == (
        403, "AccessDenied")
    assert s3.put_object(Bucket=b, Key="p", Body=b"x")["ServerSideEncryption"] == "AES256"
    assert s3.head_object(Bucket=b, Key="p")["ServerSideEncryption"] == "AES256"
    r = _signed_put(w, f"/{b}?encryption", _doc(
        "ServerSideEncryptionConfiguration", "<Rule><BucketKeyEnabled>false</BucketKeyEnabled>"
        "</Rule>"))
    assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, r.content
    assert s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"][
        "Rules"] == got


def test_encryption_configuration_with_an_unknown_element_is_malformed(
        w: dict[str, Any]) -> None:
    """A misspelt or unknown element of ServerSideEncryptionConfiguration (a blocked type
    spelt wrong above all) was dropped and the rest stored: MalformedXML now, as the
    schema says, and the configuration is left as it was."""
    s3, b = w["s3"], w["bucket"]
    before = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]
    for rule in ("<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
                 "</ApplyServerSideEncryptionByDefault><BlockedEncryptionType><EncryptionType>"
                 "SSE-C</EncryptionType></BlockedEncryptionType>",
                 "<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
                 "</ApplyServerSideEncryptionByDefault><BlockedEncryptionTypes><EncryptionType>"
                 "SSE-KMS</EncryptionType></BlockedEncryptionTypes>",
                 "<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
                 "<KMSMasterKeyId>k</KMSMasterKeyId></ApplyServerSideEncryptionByDefault>"):
        body = (f'<ServerSideEncryptionConfiguration xmlns="{NS}"><Rule>{rule}</Rule>'
                "</ServerSideEncryptionConfiguration>").encode()
        r = _signed_put(w, f"/{b}?encryption", body)
        assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, r.content
    assert s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"] == before


def _doc(root: str, inner: str) -> bytes:
    return f'<{root} xmlns="{NS}">{inner}</{root}>'.encode()


# (what, subresource path (after the bucket), document): each has an element the schema
# does not have, which was dropped while the rest was applied (a misspelt flag read as
# false, a misspelt VersionId deleted the current version instead of the one named).
UNKNOWN_ELEMENTS = [
    ("public access block", "?publicAccessBlock", _doc(
        "PublicAccessBlockConfiguration", "<BlockPublicAcl>true</BlockPublicAcl>")),
    ("ownership", "?ownershipControls", _doc(
        "OwnershipControls", "<Rule><ObjectOwnership>BucketOwnerEnforced</ObjectOwnership>"
        "<ObjectOwner>x</ObjectOwner></Rule>")),
    ("cors", "?cors", _doc(
        "CORSConfiguration", "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET"
        "</AllowedMethod><MaxAgeSecond>5</MaxAgeSecond></CORSRule>")),
    ("versioning", "?versioning", _doc(
        "VersioningConfiguration", "<Status>Enabled</Status><MFADelete>Enabled</MFADelete>")),
    ("object lock", "?object-lock", _doc(
        "ObjectLockConfiguration", "<ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>"
        "<DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days><Year>1</Year>"
        "</DefaultRetention></Rule>")),
    ("retention", "/k?retention", _doc(
        "Retention", "<Mode>GOVERNANCE</Mode><RetainUntilDate>2099-01-01T00:00:00Z"
        "</RetainUntilDate><Legalhold>ON</Legalhold>")),
    ("legal hold", "/k?legal-hold", _doc("LegalHold", "<Status>OFF</Status><Mode>x</Mode>")),
    ("object tagging", "/k?tagging", _doc(
        "Tagging", "<TagSet><Tag><Key>a</Key><Value>1</Value><Vaule>2</Vaule></Tag></TagSet>")),
    ("bucket tagging", "?tagging", _doc(
        "Tagging", "<TagSet><Tag><Key>a</Key><Value>1</Value></Tag></TagSet><Tags/>")),
]


@pytest.fixture(scope="module")
def locked(w: dict[str, Any]) -> str:
    b = f"atk-api-lock-{uuid.uuid4().hex[:8]}"
    w["s3"].create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
    w["s3"].put_object(Bucket=b, Key="k", Body=b"kept")
    return b


@pytest.mark.parametrize(("what", "sub", "body"), UNKNOWN_ELEMENTS,
                         ids=[u[0] for u in UNKNOWN_ELEMENTS])
def test_configuration_with_an_unknown_element_is_malformed(
        w: dict[str, Any], locked: str, what: str, sub: str, body: bytes) -> None:
    """An element the published schema does not have is MalformedXML, as AWS answers, and
    nothing is changed; it was dropped and the rest applied."""
    s3 = w["s3"]
    r = _signed_put(w, f"/{locked}{sub}", body)
    assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, r.content
    assert _err(s3.get_public_access_block, Bucket=locked)[1] == \
        "NoSuchPublicAccessBlockConfiguration"
    assert "Rule" not in s3.get_object_lock_configuration(
        Bucket=locked)["ObjectLockConfiguration"]
    assert s3.get_object_tagging(Bucket=locked, Key="k")["TagSet"] == []
    assert _err(s3.get_object_retention, Bucket=locked, Key="k")[0] == 404


def test_delete_objects_with_an_unknown_element_is_malformed(w: dict[str, Any],
                                                             locked: str) -> None:
    """DeleteObjects naming a version as <VersionID> (misspelt) deleted the current version
    instead (a delete marker over it); <Quite> was read as not quiet. MalformedXML now."""
    s3 = w["s3"]
    v = s3.head_object(Bucket=locked, Key="k")["VersionId"]
    for inner in (f"<Object><Key>k</Key><VersionID>{v}</VersionID></Object>",
                  "<Object><Key>k</Key></Object><Quite>true</Quite>"):
        body = _doc("Delete", inner)
        env = w["cluster"].env
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                   "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
        req = AWSRequest(method="POST", url=f"{w['cluster'].endpoint}/{locked}?delete",
                         data=body, headers=headers)
        S3SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "s3",
                    env["AWS_DEFAULT_REGION"]).add_auth(req)
        p = req.prepare()
        r = requests.post(p.url, data=body, headers=dict(p.headers), timeout=60)
        assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, r.content
    assert s3.head_object(Bucket=locked, Key="k")["VersionId"] == v


def test_complete_naming_a_digest_we_do_not_compute_is_refused(w: dict[str, Any]) -> None:
    """A CompletedPart's ChecksumSHA512 (or another algorithm no part is stored with) was
    dropped and the upload completed: 501 NotImplemented, the upload left open."""
    s3, b = w["s3"], w["bucket"]
    up = s3.create_multipart_upload(Bucket=b, Key="mpu-sha512")["UploadId"]
    etag = s3.upload_part(Bucket=b, Key="mpu-sha512", UploadId=up, PartNumber=1,
                          Body=b"abc")["ETag"]
    digest = base64.b64encode(hashlib.sha512(b"abc").digest()).decode()
    assert _err(s3.complete_multipart_upload, Bucket=b, Key="mpu-sha512", UploadId=up,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag,
                                            "ChecksumSHA512": digest}]}) == (
        501, "NotImplemented")
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=b, Key="mpu-sha512",
                                                   UploadId=up)["Parts"]] == [1]
    s3.abort_multipart_upload(Bucket=b, Key="mpu-sha512", UploadId=up)


def test_abort_if_match_initiated_time_is_a_condition(w: dict[str, Any]) -> None:
    """AbortMultipartUpload's x-amz-if-match-initiated-time was ignored: an upload begun at
    another time was aborted all the same. A time other than the upload's start is 412 and
    the upload stays; its own start (as ListMultipartUploads gives it) aborts it."""
    s3, b = w["s3"], w["bucket"]
    up = s3.create_multipart_upload(Bucket=b, Key="abort-cond")["UploadId"]
    started = next(u["Initiated"] for u in s3.list_multipart_uploads(Bucket=b)["Uploads"]
                   if u["UploadId"] == up)
    assert _err(s3.abort_multipart_upload, Bucket=b, Key="abort-cond", UploadId=up,
                IfMatchInitiatedTime=started - timedelta(days=1)) == (412, "PreconditionFailed")
    assert s3.list_parts(Bucket=b, Key="abort-cond", UploadId=up)["UploadId"] == up
    s3.abort_multipart_upload(Bucket=b, Key="abort-cond", UploadId=up,
                              IfMatchInitiatedTime=started)
    assert _err(s3.list_parts, Bucket=b, Key="abort-cond", UploadId=up)[0] == 404


def test_abort_if_match_initiated_time_of_a_missing_upload_is_204(w: dict[str, Any]) -> None:
    """AWS documents AbortMultipartUpload with x-amz-if-match-initiated-time as 204 when the
    upload does not exist (it was 404 NoSuchUpload); without the header it stays 404."""
    s3, b = w["s3"], w["bucket"]
    up = s3.create_multipart_upload(Bucket=b, Key="abort-gone")["UploadId"]
    started = next(u["Initiated"] for u in s3.list_multipart_uploads(Bucket=b)["Uploads"]
                   if u["UploadId"] == up)
    s3.abort_multipart_upload(Bucket=b, Key="abort-gone", UploadId=up)
    for when in (started, started - timedelta(days=1)):
        res = s3.abort_multipart_upload(Bucket=b, Key="abort-gone", UploadId=up,
                                        IfMatchInitiatedTime=when)
        assert res["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert _err(s3.abort_multipart_upload, Bucket=b, Key="abort-gone",
                UploadId=up) == (404, "NoSuchUpload")


def test_account_regional_bucket_namespace_is_refused(w: dict[str, Any]) -> None:
    """CreateBucket with x-amz-bucket-namespace: account-regional made a bucket in the one
    (global) namespace, 200: 501 NotImplemented now, an unknown value 400, and no bucket;
    `global` is what every bucket here is."""
    s3, b = w["s3"], f"atk-api-ns-{uuid.uuid4().hex[:8]}"
    assert _err(s3.create_bucket, Bucket=b, BucketNamespace="account-regional") == (
        501, "NotImplemented")

    def bogus(request, **_kw):  # type: ignore[no-untyped-def]
        request.headers["x-amz-bucket-namespace"] = "regional"
    s3.meta.events.register_first("before-sign.s3.CreateBucket", bogus)
    try:
        assert _err(s3.create_bucket, Bucket=b) == (400, "InvalidArgument")
    finally:
        s3.meta.events.unregister("before-sign.s3.CreateBucket", bogus)
    assert _err(s3.head_bucket, Bucket=b)[0] == 404
    s3.create_bucket(Bucket=b, BucketNamespace="global")
    s3.head_bucket(Bucket=b)


def _post(w: dict[str, Any], key: str, fields: dict[str, str], body: bytes
          ) -> requests.Response:
    form = w["s3"].generate_presigned_post(w["bucket"], key, Fields=fields,
                                           Conditions=[{k: v} for k, v in fields.items()])
    return requests.post(form["url"], data=form["fields"], files={"file": ("f", body)},
                         allow_redirects=False, timeout=60)


def test_post_form_content_md5_is_checked(w: dict[str, Any]) -> None:
    """A POST form's Content-MD5 field (AWS: "Amazon S3 checks the object against the
    provided MD5 value") was ignored: a file that did not match was stored. 400 BadDigest
    now (InvalidDigest for a value that is no MD5), nothing stored; a matching one stores."""
    def md5(data: bytes) -> str:
        return base64.b64encode(hashlib.md5(data).digest()).decode()

    r = _post(w, "post-md5", {"Content-MD5": md5(b"other")}, b"body")
    assert r.status_code == 400 and b"<Code>BadDigest</Code>" in r.content, r.content
    r = _post(w, "post-md5", {"Content-MD5": "not-an-md5"}, b"body")
    assert r.status_code == 400 and b"<Code>InvalidDigest</Code>" in r.content, r.content
    assert _absent(w, "post-md5")
    assert _post(w, "post-md5", {"Content-MD5": md5(b"body")}, b"body").status_code == 204
    assert _body(w, "post-md5") == b"body"


@pytest.mark.parametrize(("alg", "made", "asked"), [
    ("CRC32", "COMPOSITE", "FULL_OBJECT"), ("CRC32", "FULL_OBJECT", "COMPOSITE"),
    ("CRC64NVME", "FULL_OBJECT", "COMPOSITE"), ("SHA256", "COMPOSITE", "FULL_OBJECT")])
def test_complete_checksum_type_must_be_the_uploads(w: dict[str, Any], alg: str, made: str,
                                                    asked: str) -> None:
    """CompleteMultipartUpload's x-amz-checksum-type was ignored: a completion asserting
    another type than the upload's completed. AWS: BadDigest; the upload stays open and
    completes when the type matches."""
    s3, b, key = w["s3"], w["bucket"], f"ctype-{alg}-{made}"
    up = s3.create_multipart_upload(Bucket=b, Key=key, ChecksumAlgorithm=alg,
                                    ChecksumType=made)["UploadId"]
    part = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=1, Body=b"abc",
                          ChecksumAlgorithm=alg)
    listed = {"PartNumber": 1, "ETag": part["ETag"],
              f"Checksum{alg}": part[f"Checksum{alg}"]}

    def complete(ctype: str) -> Any:
        return s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=up, ChecksumType=ctype,
                                            MultipartUpload={"Parts": [listed]})
    assert _err(complete, ctype=asked) == (400, "BadDigest")
    assert _absent(w, key)
    assert complete(made)["ChecksumType"] == made


@pytest.mark.parametrize("enabled", [
    "<TargetBucket>{t}</TargetBucket><TargetPrefix>p/</TargetPrefix><TargetObjectKeyFormat>"
    "<PartitionedPrefix><PartitionDateSorce>DeliveryTime</PartitionDateSorce>"
    "</PartitionedPrefix></TargetObjectKeyFormat>",
    "<TargetBucket>{t}</TargetBucket><TargetPrefix>p/</TargetPrefix><TargetGrant/>",
], ids=["PartitionDateSource", "TargetGrants"])
def test_logging_status_with_an_unknown_element_is_malformed(w: dict[str, Any],
                                                            enabled: str) -> None:
    """A misspelt element of BucketLoggingStatus was dropped (a misspelt
    PartitionDateSource logged by EventTime): MalformedXML now, logging left off."""
    s3, b = w["s3"], f"atk-api-log-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    body = _doc("BucketLoggingStatus",
                "<LoggingEnabled>" + enabled.format(t=w["bucket"]) + "</LoggingEnabled>")
    r = _signed_put(w, f"/{b}?logging", body)
    assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, r.content
    assert "LoggingEnabled" not in s3.get_bucket_logging(Bucket=b)


def test_acl_document_with_an_unknown_element_is_malformed(w: dict[str, Any]) -> None:
    """A misspelt <Grant> (or another element the schema does not have) in a PutBucketAcl
    body was dropped and the other grants applied: MalformedACLError now (AWS's code for an
    ACL document), the ACL unchanged."""
    s3, b = w["s3"], f"atk-api-acl-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b, ObjectOwnership="ObjectWriter")
    before = s3.get_bucket_acl(Bucket=b)
    owner = before["Owner"]["ID"]
    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    grant = (f'<Grant><Grantee {xsi} xsi:type="CanonicalUser"><ID>{owner}</ID></Grantee>'
             "<Permission>FULL_CONTROL</Permission></Grant>")
    public = (f'<Grant><Grantee {xsi} xsi:type="Group"><URI>http://acs.amazonaws.com/groups/'
              "global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant>")
    for acl in (grant + public.replace("Grant>", "Grnt>"),
                grant + public.replace("<Permission>", "<Permision>Read</Permision>"
                                       "<Permission>"),
                grant.replace("</ID>", "</ID><Name>x</Name>")):
        body = _doc("AccessControlPolicy", f"<Owner><ID>{owner}</ID></Owner>"
                    f"<AccessControlList>{acl}</AccessControlList>")
        r = _signed_put(w, f"/{b}?acl", body)
        assert r.status_code == 400 and b"<Code>MalformedACLError</Code>" in r.content, \
            r.content
    assert s3.get_bucket_acl(Bucket=b)["Grants"] == before["Grants"]
