"""The IAM actions Amazon S3 defines (service prefix `s3`), for PutBucketPolicy's check.

AWS refuses a bucket policy naming an action S3 does not define with MalformedPolicy
"Policy has invalid action" (versitygw #650 quotes AWS's answer; ministryofjustice
cloud-platform-environments #7685 shows it from a real `PutBucketPolicy`), so a typo'd
Deny (`s3:GetObjekt`) is refused instead of stored and applied to nothing. The list is the
"Actions defined by Amazon S3" table of AWS's Service Authorization Reference
(docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html), as of
2026: every action, including those for features the gateway does not have (access
points, jobs, Storage Lens): a policy copied from AWS may name them, and they match no
request here. Action names are case-insensitive, as IAM's are. When AWS adds an action,
add it here (a policy naming it is refused until then).
"""

from __future__ import annotations

from gateway.s3.policy_conditions import glob_match

S3_ACTIONS: tuple[str, ...] = (
    "AbortMultipartUpload", "AllowVendedLogDeliveryForResource",
    "AssociateAccessGrantsIdentityCenter", "BypassGovernanceRetention", "CreateAccessGrant",
    "CreateAccessGrantsInstance", "CreateAccessGrantsLocation", "CreateAccessPoint",
    "CreateAccessPointForObjectLambda", "CreateBucket",
    "CreateBucketMetadataTableConfiguration", "CreateJob", "CreateMultiRegionAccessPoint",
    "CreateStorageLensGroup", "DeleteAccessGrant", "DeleteAccessGrantsInstance",
    "DeleteAccessGrantsInstanceResourcePolicy", "DeleteAccessGrantsLocation",
    "DeleteAccessPoint", "DeleteAccessPointForObjectLambda", "DeleteAccessPointPolicy",
    "DeleteAccessPointPolicyForObjectLambda", "DeleteBucket",
    "DeleteBucketMetadataTableConfiguration", "DeleteBucketPolicy", "DeleteBucketWebsite",
    "DeleteJobTagging", "DeleteMultiRegionAccessPoint", "DeleteObject",
    "DeleteObjectAnnotation", "DeleteObjectTagging", "DeleteObjectVersion",
    "DeleteObjectVersionAnnotation", "DeleteObjectVersionTagging",
    "DeleteStorageLensConfiguration", "DeleteStorageLensConfigurationTagging",
    "DeleteStorageLensGroup", "DescribeJob", "DescribeMultiRegionAccessPointOperation",
    "DissociateAccessGrantsIdentityCenter", "GetAccelerateConfiguration", "GetAccessGrant",
    "GetAccessGrantsInstance", "GetAccessGrantsInstanceForPrefix",
    "GetAccessGrantsInstanceResourcePolicy", "GetAccessGrantsLocation", "GetAccessPoint",
    "GetAccessPointConfigurationForObjectLambda", "GetAccessPointForObjectLambda",
    "GetAccessPointPolicy", "GetAccessPointPolicyForObjectLambda",
    "GetAccessPointPolicyStatus", "GetAccessPointPolicyStatusForObjectLambda",
    "GetAccountPublicAccessBlock", "GetAnalyticsConfiguration", "GetBucketAbac",
    "GetBucketAcl", "GetBucketCORS", "GetBucketLocation", "GetBucketLogging",
    "GetBucketMetadataTableConfiguration", "GetBucketNotification",
    "GetBucketObjectLockConfiguration", "GetBucketOwnershipControls", "GetBucketPolicy",
    "GetBucketPolicyStatus", "GetBucketPublicAccessBlock", "GetBucketRequestPayment",
    "GetBucketTagging", "GetBucketVersioning", "GetBucketWebsite", "GetDataAccess",
    "GetEncryptionConfiguration", "GetIntelligentTieringConfiguration",
    "GetInventoryConfiguration", "GetJobTagging", "GetLifecycleConfiguration",
    "GetMetricsConfiguration", "GetMultiRegionAccessPoint", "GetMultiRegionAccessPointPolicy",
    "GetMultiRegionAccessPointPolicyStatus", "GetMultiRegionAccessPointRoutes", "GetObject",
    "GetObjectAcl", "GetObjectAnnotation", "GetObjectAttributes", "GetObjectLegalHold",
    "GetObjectRetention", "GetObjectTagging", "GetObjectTorrent", "GetObjectVersion",
    "GetObjectVersionAcl", "GetObjectVersionAnnotation",
    "GetObjectVersionAnnotationForReplication", "GetObjectVersionAttributes",
    "GetObjectVersionForReplication", "GetObjectVersionTagging", "GetObjectVersionTorrent",
    "GetReplicationConfiguration", "GetStorageLensConfiguration",
    "GetStorageLensConfigurationTagging", "GetStorageLensDashboard", "GetStorageLensGroup",
    "InitiateReplication", "ListAccessGrants", "ListAccessGrantsInstances",
    "ListAccessGrantsLocations", "ListAccessPoints", "ListAccessPointsForObjectLambda",
    "ListAllMyBuckets", "ListBucket", "ListBucketMultipartUploads", "ListBucketVersions",
    "ListCallerAccessGrants", "ListJobs", "ListMultiRegionAccessPoints",
    "ListMultipartUploadParts", "ListObjectAnnotations", "ListObjectVersionAnnotations",
    "ListStorageLensConfigurations", "ListStorageLensGroups", "ListTagsForResource",
    "ObjectOwnerOverrideToBucketOwner", "PauseReplication", "PutAccelerateConfiguration",
    "PutAccessGrantsInstanceResourcePolicy", "PutAccessPointConfigurationForObjectLambda",
    "PutAccessPointPolicy", "PutAccessPointPolicyForObjectLambda",
    "PutAccessPointPublicAccessBlock", "PutAccountPublicAccessBlock",
    "PutAnalyticsConfiguration", "PutBucketAbac", "PutBucketAcl", "PutBucketCORS",
    "PutBucketLogging", "PutBucketNotification", "PutBucketObjectLockConfiguration",
    "PutBucketOwnershipControls", "PutBucketPolicy", "PutBucketPublicAccessBlock",
    "PutBucketRequestPayment", "PutBucketTagging", "PutBucketVersioning", "PutBucketWebsite",
    "PutEncryptionConfiguration", "PutIntelligentTieringConfiguration",
    "PutInventoryConfiguration", "PutJobTagging", "PutLifecycleConfiguration",
    "PutMetricsConfiguration", "PutMultiRegionAccessPointPolicy", "PutObject", "PutObjectAcl",
    "PutObjectAnnotation", "PutObjectLegalHold", "PutObjectRetention", "PutObjectTagging",
    "PutObjectVersionAcl", "PutObjectVersionAnnotation", "PutObjectVersionTagging",
    "PutReplicationConfiguration", "PutStorageLensConfiguration",
    "PutStorageLensConfigurationTagging", "ReplicateDelete", "ReplicateObject",
    "ReplicateObjectAnnotation", "ReplicateTags", "RestoreObject",
    "SubmitMultiRegionAccessPointRoutes", "TagResource", "UntagResource",
    "UpdateAccessGrantsLocation", "UpdateBucketMetadataAnnotationTableConfiguration",
    "UpdateBucketMetadataInventoryTableConfiguration",
    "UpdateBucketMetadataJournalTableConfiguration", "UpdateJobPriority", "UpdateJobStatus",
    "UpdateObjectEncryption", "UpdateStorageLensGroup",
)
_LOWER = frozenset("s3:" + a.lower() for a in S3_ACTIONS)


def known(action: object) -> bool:
    """Whether an Action/NotAction value is one AWS accepts in an S3 bucket policy: `*`,
    an S3 action by name (any case), or a pattern with `*`/`?` that matches at least one
    S3 action (`s3:*`, `s3:Get*`); a pattern matching none names nothing, like a typo
    (AWS's answer to it is inferred, not measured)."""
    if not isinstance(action, str):
        return False
    a = action.lower()
    if a == "*":
        return True
    if not a.startswith("s3:"):
        return False
    if "*" not in a and "?" not in a:
        return a in _LOWER
    return any(glob_match(a, name) for name in _LOWER)


# The request headers whose condition keys (`s3:` + the header; `s3:object-lock-*` for
# `x-amz-object-lock-*`; `s3:RequestObjectTag/<k>` and `s3:RequestObjectTagKeys` for
# `x-amz-tagging`) AWS puts in an action's request context, per that reference's "Condition
# keys" column. Every action also has s3:x-amz-content-sha256. A header an action does not
# list gives it no key: a GetObject sending `x-amz-acl: public-read` neither earns an Allow
# conditioned on it nor meets a Deny (the header applies nothing there).
_ACL_HEADERS = ("x-amz-acl", "x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp",
                "x-amz-grant-write-acp", "x-amz-grant-full-control")
_WRITE_HEADERS = (*_ACL_HEADERS, "x-amz-copy-source", "x-amz-metadata-directive",
                  "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
                  "x-amz-server-side-encryption-customer-algorithm", "x-amz-storage-class",
                  "x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date",
                  "x-amz-object-lock-legal-hold", "x-amz-tagging")
_HEADER_KEYS: dict[str, frozenset[str]] = {
    "s3:putobject": frozenset(_WRITE_HEADERS),
    "s3:bypassgovernanceretention": frozenset(_WRITE_HEADERS),
    "s3:putobjectacl": frozenset((*_ACL_HEADERS, "x-amz-storage-class")),
    "s3:putobjectversionacl": frozenset((*_ACL_HEADERS, "x-amz-storage-class")),
    "s3:putbucketacl": frozenset(_ACL_HEADERS),
    "s3:createbucket": frozenset(_ACL_HEADERS),
    # their keys come from the Retention / LegalHold body (handlers.object_lock)
    "s3:putobjectretention": frozenset(("x-amz-object-lock-mode",
                                        "x-amz-object-lock-retain-until-date")),
    "s3:putobjectlegalhold": frozenset(("x-amz-object-lock-legal-hold",)),
}
ALWAYS_HEADERS = frozenset(("x-amz-content-sha256",))
KEYED_HEADERS = (*_WRITE_HEADERS, "x-amz-content-sha256")  # every header a key reads


def header_keys(action: str) -> frozenset[str]:
    """The request headers that give `action` (s3:PutObject, ...) a condition key."""
    return _HEADER_KEYS.get(action.lower(), frozenset()) | ALWAYS_HEADERS
