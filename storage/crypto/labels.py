"""Every domain-separation label of the key hierarchy: named, versioned, in one place."""

ROOT_WRAPS_KEK_V1 = b"tessera/root-wraps-kek/v1"
KEK_WRAPS_DEK_V1 = b"tessera/kek-wraps-dek/v1"
SSEC_WRAPS_DEK_V1 = b"tessera/ssec-wraps-dek/v1"
ROOT_WRAPS_SECRET_V1 = b"tessera/root-wraps-access-secret/v1"
SEGMENT_AAD_V1 = b"tessera/segment/v1"
SSEC_KEY_HMAC_V1 = b"tessera/ssec-key-hmac/v1"
