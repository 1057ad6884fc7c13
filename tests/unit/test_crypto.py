"""The key hierarchy: root key -> tenant KEK -> object DEK, each bound to whom it belongs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from storage.crypto import aead, keys, labels
from storage.errors import IntegrityError
from tests.vectors import generate


@pytest.fixture
def root(tmp_path: Path) -> keys.FileRootKey:
    return keys.FileRootKey(tmp_path / "secrets" / "root.key")


def test_root_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "root.key"
    first = keys.FileRootKey(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert len(path.read_bytes()) == aead.KEY_BYTES
    wrapped = first.wrap(b"x" * 32, b"aad")
    assert keys.FileRootKey(path).unwrap(wrapped, b"aad") == b"x" * 32  # reloaded, same key


def test_damaged_root_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="damaged"):
        keys.FileRootKey(path)


def test_kek_round_trip_and_binding(root: keys.FileRootKey, tmp_path: Path) -> None:
    wrapped = keys.new_kek(root, "alice", 1)
    kek = keys.open_kek(root, "alice", 1, wrapped)
    assert len(kek) == 32
    with pytest.raises(IntegrityError):
        keys.open_kek(root, "bob", 1, wrapped)  # another tenant
    with pytest.raises(IntegrityError):
        keys.open_kek(root, "alice", 2, wrapped)  # another KEK version
    other_root = keys.FileRootKey(tmp_path / "other.key")
    with pytest.raises(IntegrityError):
        keys.open_kek(other_root, "alice", 1, wrapped)
    assert keys.new_kek(root, "alice", 1) != wrapped  # fresh key, fresh nonce


def test_dek_wrap_unwrap_and_binding(root: keys.FileRootKey) -> None:
    kek = keys.open_kek(root, "alice", 1, keys.new_kek(root, "alice", 1))
    ident = keys.object_identity("alice", "photos", "cat.jpg", "v1")
    dek = keys.new_dek()
    blob = keys.wrap_dek(kek, "alice", ident, dek)
    assert keys.unwrap_dek(kek, "alice", ident, blob) == dek
    with pytest.raises(IntegrityError):
        keys.unwrap_dek(kek, "bob", ident, blob)  # wrong tenant
    for other in [("alice", "photos", "cat.jpg", "v2"), ("alice", "photos", "dog.jpg", "v1"),
                  ("alice", "videos", "cat.jpg", "v1"), ("bob", "photos", "cat.jpg", "v1")]:
        with pytest.raises(IntegrityError):
            keys.unwrap_dek(kek, "alice", keys.object_identity(*other), blob)  # wrong identity
    other_kek = keys.open_kek(root, "alice", 2, keys.new_kek(root, "alice", 2))
    with pytest.raises(IntegrityError):
        keys.unwrap_dek(other_kek, "alice", ident, blob)  # wrong KEK (rotated or shredded)
    bad = bytearray(blob)
    bad[-1] ^= 1
    with pytest.raises(IntegrityError):
        keys.unwrap_dek(kek, "alice", ident, bytes(bad))


def test_identity_encoding_is_unambiguous() -> None:
    a = keys.object_identity("t", "b", "x/y", "v")
    assert a != keys.object_identity("t", "b/x", "y", "v")
    assert a != keys.object_identity("t", "bx", "/y", "v")
    assert keys.object_identity("t", "b", "k\x00", "v") != keys.object_identity("t", "b", "k",
                                                                                "\x00v")
    assert keys.object_identity("t", "b", "k", "v") == keys.object_identity("t", "b", "k", "v")


def test_segment_aad_binds_every_field() -> None:
    base = keys.segment_aad("id", 1, 0, False)
    assert len({base, keys.segment_aad("id2", 1, 0, False), keys.segment_aad("id", 2, 0, False),
                keys.segment_aad("id", 1, 1, False), keys.segment_aad("id", 1, 0, True)}) == 5
    assert base.startswith(labels.SEGMENT_AAD_V1)


def test_labels_are_distinct_and_versioned() -> None:
    values = [v for k, v in vars(labels).items() if k.isupper()]
    assert len(values) == len(set(values)) >= 5
    assert all(v.startswith(b"tessera/") and v.endswith(b"/v1") for v in values)


def test_segment_cipher_counter_nonce() -> None:
    c = aead.SegmentCipher(b"k" * 32)
    a, b = c.seal(0, b"same", b"aad"), c.seal(1, b"same", b"aad")
    assert a != b and len(a) == 4 + aead.TAG_BYTES
    assert c.open(1, b, b"aad") == b"same"
    with pytest.raises(IntegrityError):
        c.open(0, b, b"aad")
    with pytest.raises(IntegrityError):
        c.open(1, b, b"other")
    assert aead.counter_nonce(1) != aead.counter_nonce(2)
    assert len(aead.counter_nonce(2**63)) == aead.NONCE_BYTES


def test_wrap_uses_random_nonces() -> None:
    kek = aead.random_key()
    assert aead.wrap(kek, b"d" * 32, b"a") != aead.wrap(kek, b"d" * 32, b"a")
    with pytest.raises(IntegrityError):
        aead.unwrap(kek, b"\x00" * 5, b"a")  # truncated blob


def test_golden_wrapped_dek_still_unwraps() -> None:
    """A DEK wrapped by format v1 must unwrap forever (its nonce is random, so pin the blob)."""
    golden = json.loads(generate.PATH.read_text())
    blob = bytes.fromhex(golden["wrapped_dek"])
    assert keys.unwrap_dek(generate.KEK, "tenant-a", generate.IDENTITY, blob) == generate.DEK
    assert keys.dek_aad("tenant-a", generate.IDENTITY).hex() == golden["dek_aad"]
    assert keys.kek_aad("tenant-a", 1).hex() == golden["kek_aad"]
    with pytest.raises(IntegrityError):
        keys.unwrap_dek(generate.KEK, "tenant-b", generate.IDENTITY, blob)
