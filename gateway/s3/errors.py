"""S3 errors as the wire sees them: a code, an HTTP status, a message and extra fields.

`ERRORS` is AWS's own table (the codes documented in the S3 API reference, "Error
responses"), giving each code's HTTP status and default message. Where AWS's live responses use
a shorter message than its documentation (NoSuchUpload, SignatureDoesNotMatch, ...), the live
message is used, since that is what clients and conformance suites see.

`S3Error` is the only exception the S3 handlers raise towards the client. Domain errors from
`storage/` are mapped to it at the edge; anything else becomes `InternalError` and its details
are logged, never sent. `error_xml` renders one in AWS's exact body shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.etree import ElementTree as ET

__all__ = ["ERRORS", "S3Error", "error_xml", "xml_document"]

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# Characters XML 1.0 cannot carry at all, not even as a character reference (`&#x0;` is not
# well-formed): no response ever holds one. Object keys may (S3 keys are any Unicode); a
# listing then needs encoding-type=url, and elsewhere (an error's <Key>, a multipart
# result's <Key>) the element is left out. See "Object keys" in docs/ARCHITECTURE.md.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """`text` (already escaped for &, <, >) with CR as a reference, which a parser would
    otherwise normalise to LF (as AWS writes it)."""
    return text.replace("\r", "&#xD;")

_MALFORMED_XML = (
    "The XML you provided was not well-formed or did not validate against our published schema"
)

#: code -> (HTTP status, default message), after AWS's "List of error codes".
ERRORS: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AccessForbidden": (403, "CORSResponse: This CORS request is not allowed."),
    "AccessControlListNotSupported": (400, "The bucket does not allow ACLs"),
    "AccountProblem": (
        403,
        "There is a problem with your AWS account that prevents the action from completing "
        "successfully. Contact AWS Support for further assistance.",
    ),
    "AllAccessDisabled": (
        403,
        "All access to this Amazon S3 resource has been disabled. "
        "Contact AWS Support for further assistance.",
    ),
    "AmbiguousGrantByEmailAddress": (
        400,
        "The email address you provided is associated with more than one account.",
    ),
    "AuthorizationHeaderMalformed": (400, "The authorization header you provided is invalid."),
    "AuthorizationQueryParametersError": (
        400,
        "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
        "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
    ),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BadRequest": (400, "Bad Request"),
    "BucketAlreadyExists": (
        409,
        "The requested bucket name is not available. The bucket namespace is shared by all "
        "users of the system. Please select a different name and try again.",
    ),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "ConditionalRequestConflict": (
        409,
        "The conditional request cannot succeed due to a conflicting operation against this "
        "resource.",
    ),
    "CredentialsNotSupported": (400, "This request does not support credentials."),
    "CrossLocationLoggingProhibited": (
        403,
        "Cross-location logging not allowed. Buckets in one geographic location cannot log "
        "information to a bucket in another location.",
    ),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size"),
    "EntityTooSmall": (
        400,
        "Your proposed upload is smaller than the minimum allowed object size.",
    ),
    "ExpiredToken": (400, "The provided token has expired."),
    "IllegalLocationConstraintException": (
        400,
        "The unspecified location constraint is incompatible for the region specific endpoint "
        "this request was sent to.",
    ),
    "IllegalVersioningConfigurationException": (
        400,
        "The versioning configuration specified in the request is invalid.",
    ),
    "IncompleteBody": (
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
    ),
    "IncorrectNumberOfFilesInPostRequest": (
        400,
        "POST requires exactly one file upload per request.",
    ),
    "InlineDataTooLarge": (400, "Inline data exceeds the maximum allowed size."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (
        403,
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    "InvalidAddressingHeader": (400, "You must specify the Anonymous role."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "InvalidChunkSizeError": (
        403,
        "Only the last chunk is allowed to have a size less than 8192 bytes",
    ),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidEncryptionAlgorithmError": (
        400,
        "The encryption request you specified is not valid. The valid value is AES256.",
    ),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidObjectState": (403, "The operation is not valid for the object's storage class"),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part may not have been "
        "uploaded, or the specified entity tag may not match the part's entity tag.",
    ),
    "InvalidPartNumber": (416, "The requested partnumber is not satisfiable"),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
    ),
    "InvalidPayer": (
        403,
        "All access to this object has been disabled. Contact AWS Support for further assistance.",
    ),
    "InvalidPolicyDocument": (
        400,
        "The content of the form does not meet the conditions specified in the policy document.",
    ),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRedirectLocation": (400, "The website redirect location must have a prefix of "
                                "'http://' or 'https://' or '/'."),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidSecurity": (403, "The provided security credentials are not valid."),
    "InvalidSOAPRequest": (400, "The SOAP request body is invalid."),
    "InvalidStorageClass": (400, "The storage class you specified is not valid"),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidTargetBucketForLogging": (
        400,
        "The target bucket for logging does not exist, is not owned by you, or does not have "
        "the appropriate grants for the log-delivery group.",
    ),
    "InvalidToken": (400, "The provided token is malformed or otherwise invalid."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedACLError": (400, _MALFORMED_XML),
    "MalformedPOSTRequest": (
        400,
        "The body of your POST request is not well-formed multipart/form-data.",
    ),
    "MalformedPolicy": (400, "Policies must be valid JSON and the first byte must be '{'"),
    "MalformedXML": (400, _MALFORMED_XML),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    # AWS's answer as sent (waynehoover/s3_direct_upload#45, Vydia/react-native-background-
    # upload#55, with MaxPostPreDataLengthBytes), not its error table's
    # "MaxPostPreDataLengthExceededError"; the message's spelling is AWS's
    "MaxPostPreDataLengthExceeded": (
        400,
        "Your POST request fields preceeding the upload file was too large.",
    ),
    "MetadataTooLarge": (
        400,
        "Your metadata headers exceed the maximum allowed metadata size.",
    ),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingAttachment": (400, "A SOAP attachment was expected, but none were found."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingRequestBodyError": (400, "Request Body is empty"),
    "MissingSecurityElement": (400, "The SOAP 1.1 request is missing a security element."),
    "MissingSecurityHeader": (400, "Your request is missing a required header."),
    "NoLoggingStatusForKey": (
        400,
        "There is no such thing as a logging status subresource for a key.",
    ),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchBucketPolicy": (404, "The bucket policy does not exist"),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist"),
    "NoSuchObjectLockConfiguration": (404, "The specified object does not have a ObjectLock"),
    "NoSuchPublicAccessBlockConfiguration": (
        404,
        "The public access block configuration was not found",
    ),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchUpload": (
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may "
        "have been aborted or completed.",
    ),
    "NoSuchVersion": (
        404,
        "The specified version does not exist.",
    ),
    "NoSuchWebsiteConfiguration": (
        404,
        "The specified bucket does not have a website configuration",
    ),
    "NotImplemented": (
        501,
        "A header you provided implies functionality that is not implemented",
    ),
    "NotModified": (304, "Not Modified"),
    "NotSignedUp": (403, "Your account is not signed up for the Amazon S3 service."),
    "ObjectLockConfigurationNotFoundError": (
        404,
        "Object Lock configuration does not exist for this bucket",
    ),
    "ObjectNotInActiveTierError": (
        403,
        "The source object of the COPY operation is not in the active tier and is only stored "
        "in Amazon Glacier.",
    ),
    "OperationAborted": (
        409,
        "A conflicting conditional operation is currently in progress against this resource. "
        "Please try again.",
    ),
    "OwnershipControlsNotFoundError": (404, "The bucket ownership controls were not found"),
    "PermanentRedirect": (
        301,
        "The bucket you are attempting to access must be addressed using the specified "
        "endpoint. Please send all future requests to this endpoint.",
    ),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "Redirect": (307, "Temporary redirect."),
    "ReplicationConfigurationNotFoundError": (
        404,
        "The replication configuration was not found",
    ),
    "RequestHeaderSectionTooLarge": (
        400,
        "Your request header section exceeds the maximum allowed size.",
    ),
    "RequestIsNotMultiPartContent": (
        400,
        "Bucket POST must be of the enclosure-type multipart/form-data",
    ),
    "RequestTimeTooSkewed": (
        403,
        "The difference between the request time and the current time is too large.",
    ),
    "RequestTimeout": (
        400,
        "Your socket connection to the server was not read from or written to within the "
        "timeout period. Idle connections will be closed.",
    ),
    "RequestTorrentOfBucketError": (
        400,
        "Requesting the torrent file of a bucket is not permitted.",
    ),
    "RestoreAlreadyInProgress": (409, "Object restore is already in progress"),
    "ServerSideEncryptionConfigurationNotFoundError": (
        404,
        "The server side encryption configuration was not found",
    ),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "SlowDown": (503, "Please reduce your request rate."),
    "TemporaryRedirect": (307, "You are being redirected to the bucket while DNS updates."),
    "TokenRefreshRequired": (400, "The provided token must be refreshed."),
    "TooManyBuckets": (400, "You have attempted to create more buckets than allowed"),
    "UnexpectedContent": (400, "This request does not support content"),
    "UnresolvableGrantByEmailAddress": (
        400,
        "The email address you provided does not match any account on record.",
    ),
    "UserKeyMustBeSpecified": (
        400,
        "The bucket POST must contain the specified field name. If it is specified, check the "
        "order of the fields.",
    ),
    "XAmzContentSHA256Mismatch": (
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
}


class S3Error(Exception):
    """An error answered to an S3 client, rendered by `error_xml`.

    `extra` holds additional child elements of `<Error>` in order (for example `BucketName`,
    `Key`, `ArgumentName`, `ArgumentValue`, `Condition`); `headers` are response headers to
    add (for example `x-amz-delete-marker` on a 404 for a delete marker).
    """

    code: str
    status: int
    message: str
    resource: str | None
    extra: dict[str, str]
    headers: dict[str, str]

    def __init__(
        self,
        code: str,
        message: str | None = None,
        status: int | None = None,
        *,
        resource: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: str,
    ) -> None:
        known = ERRORS.get(code)
        if known is None:
            if status is None:
                raise ValueError(f"unknown S3 error code {code!r} needs an explicit status")
            known = (status, code)
        self.code = code
        self.status = known[0] if status is None else status
        self.message = known[1] if message is None else message
        self.resource = resource
        self.extra = {name: str(value) for name, value in extra.items()}
        self.headers = dict(headers or {})
        super().__init__(f"{code}: {self.message}")

    @property
    def has_body(self) -> bool:
        """False for statuses that must not carry a body (304 Not Modified, 1xx, 204)."""
        return not (self.status < 200 or self.status in (204, 304))

    def __repr__(self) -> str:
        return f"S3Error({self.code!r}, status={self.status}, message={self.message!r})"


HOST_ID = "tessera"  # the HostId of every answer (x-amz-id-2)


def error_xml(err: S3Error, request_id: str, host_id: str) -> bytes:
    """Render `err` as AWS's `<Error>` document; empty bytes when the status has no body."""
    if not err.has_body:
        return b""
    root = ET.Element("Error")
    ET.SubElement(root, "Code").text = err.code
    ET.SubElement(root, "Message").text = err.message
    for name, value in err.extra.items():
        ET.SubElement(root, name).text = value
    if err.resource is not None:
        ET.SubElement(root, "Resource").text = err.resource
    ET.SubElement(root, "RequestId").text = request_id
    ET.SubElement(root, "HostId").text = host_id
    return xml_document(root)


def xml_document(root: ET.Element) -> bytes:
    """Serialise `root` as UTF-8 with the XML declaration (shared with `gateway.s3.xml`)."""
    for parent in list(root.iter()):
        for child in list(parent):
            if child.text and XML_FORBIDDEN.search(child.text):
                parent.remove(child)  # a name XML cannot carry: left out, never mangled
    text = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    return XML_DECLARATION + xml_text(text).encode("utf-8")
