"""KMS key names as AWS writes them (storage.kms.parse_key_ref) and the KMS key wrappings."""

from __future__ import annotations

import pytest

from storage.crypto import aead, keys
from storage.errors import IntegrityError, InvalidInput
from storage.kms import KeyRef, KmsNotFound, alias_arn, alias_name, key_arn, parse_key_ref

KID = "1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize(("ref", "want"), [
    (KID, KeyRef("key", KID)),
    (f"arn:aws:kms:us-east-1:acme:key/{KID}", KeyRef("key", KID, "us-east-1", "acme")),
    (f"arn:aws:kms:eu-west-1:111122223333:key/{KID}",
     KeyRef("key", KID, "eu-west-1", "111122223333")),
    ("alias/orders", KeyRef("alias", "orders")),
    ("alias/aws/s3", KeyRef("alias", "aws/s3")),
    ("alias/team_a/orders-2", KeyRef("alias", "team_a/orders-2")),
    ("arn:aws:kms:us-east-1:acme:alias/orders", KeyRef("alias", "orders", "us-east-1", "acme")),
])
def test_every_aws_form_parses(ref: str, want: KeyRef) -> None:
    assert parse_key_ref(ref) == want


@pytest.mark.parametrize("ref", [
    "", "testkey-1", "acme/kek", "alias/", "alias/has space", "alias/" + "x" * 251,
    KID.upper(), KID[:-1], KID + "0", "arn:aws:kms:us-east-1:acme:key/orders",
    "arn:aws:kms:us-east-1:acme:alias/", f"arn:aws:kms::acme:key/{KID}",
    f"arn:aws:s3:us-east-1:acme:key/{KID}", f"arn:aws:kms:us-east-1::key/{KID}",
    f"arn:aws:kms:us-east-1:acme:grant/{KID}", "\x00", "alias/a\x00b",
])
def test_malformed_names_are_invalid_key_ids(ref: str) -> None:
    with pytest.raises(KmsNotFound) as ei:
        parse_key_ref(ref)
    assert str(ei.value) == f"Invalid keyId {ref}"


def test_alias_names_and_arns() -> None:
    assert alias_name("alias/orders") == alias_name("orders") == "orders"
    for bad in ("", "alias/", "a b", "x" * 251):
        with pytest.raises(InvalidInput):
            alias_name(bad)
    assert key_arn("us-east-1", "acme", KID) == f"arn:aws:kms:us-east-1:acme:key/{KID}"
    assert alias_arn("us-east-1", "acme", "o") == "arn:aws:kms:us-east-1:acme:alias/o"
    for arn in (key_arn("r-1", "acme", KID), alias_arn("r-1", "acme", "o")):
        parsed = parse_key_ref(arn)
        assert (parsed.region, parsed.account) == ("r-1", "acme")


def test_kms_key_material_is_bound_to_tenant_key_id_and_kek_version() -> None:
    kek = aead.random_key()
    wrapped = keys.new_kms_key(kek, "acme", KID, 1)
    raw = keys.open_kms_key(kek, "acme", KID, 1, wrapped)
    assert len(raw) == aead.KEY_BYTES
    for tenant, kid, version in (("other", KID, 1), ("acme", KID[::-1], 1), ("acme", KID, 2)):
        with pytest.raises(IntegrityError):
            keys.open_kms_key(kek, tenant, kid, version, wrapped)
    with pytest.raises(IntegrityError):
        keys.open_kms_key(aead.random_key(), "acme", KID, 1, wrapped)


def test_dek_wrapped_by_kms_key_or_bucket_key_opens_only_with_it() -> None:
    material, dek = aead.random_key(), aead.random_key()
    blob = keys.wrap_kms(material, "acme", KID, "ident", dek)
    assert keys.unwrap_kms(material, "acme", KID, "ident", blob) == dek
    for args in (("acme", KID, "other-ident"), ("acme", "k2", "ident"), ("bob", KID, "ident")):
        with pytest.raises(IntegrityError):
            keys.unwrap_kms(material, *args, blob)
    bkey = keys.bucket_key(material, "acme", KID, "photos")
    assert bkey == keys.bucket_key(material, "acme", KID, "photos")
    assert len(bkey) == aead.KEY_BYTES and bkey != material
    assert bkey != keys.bucket_key(material, "acme", KID, "photos2")
    assert bkey != keys.bucket_key(material, "acme2", KID, "photos")
    sealed = keys.wrap_kms(bkey, "acme", KID, "ident", dek)
    with pytest.raises(IntegrityError):
        keys.unwrap_kms(material, "acme", KID, "ident", sealed)
    assert keys.unwrap_kms(bkey, "acme", KID, "ident", sealed) == dek
