"""AES-256-GCM: the only module that imports `cryptography`.

Segments are sealed with a counter nonce (a data key is never reused across object versions
or extents, so counters never repeat under one key); wrapped keys use random nonces because
one key-encryption key wraps many data keys.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import IntegrityError

KEY_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12


def random_key() -> bytes:
    return os.urandom(KEY_BYTES)


def counter_nonce(counter: int) -> bytes:
    return struct.pack(">IQ", 0, counter)


class SegmentCipher:
    """Seals and opens the segments of one object version under its data key."""

    __slots__ = ("_aead", "_key")

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._key = key

    def seal(self, counter: int, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        return self._aead.encrypt(counter_nonce(counter), plaintext, aad)

    def sealer(self, counter: int, aad: bytes) -> Any:
        """A GCM encryptor for segment `counter` with `aad` fed: `seal` written piecewise
        (`update_into` wherever the ciphertext goes, `finalize`, then `.tag`)."""
        enc = Cipher(algorithms.AES(self._key), modes.GCM(counter_nonce(counter))).encryptor()
        enc.authenticate_additional_data(aad)
        return enc

    def open(self, counter: int, ciphertext: bytes | memoryview, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(counter_nonce(counter), ciphertext, aad)
        except InvalidTag:
            raise IntegrityError(f"segment {counter} failed authentication") from None

    def open_into(self, counter: int, pieces: Sequence[memoryview], sealed_len: int,
                  aad: bytes, out: bytearray) -> memoryview:
        """`open` of the sealed segment that is the first `sealed_len` bytes of `pieces`
        (the data blocks, in order), decrypted piece by piece into `out` with no join.

        Returns the plaintext as a view of `out`, and only once the tag verified; `out`
        needs `sealed_len` bytes of room (plaintext + a cipher block of slack).
        """
        plen = sealed_len - TAG_BYTES
        tag = bytearray()
        dec = self._cipher(counter, pieces, plen, tag)
        dec.authenticate_additional_data(aad)
        target = memoryview(out)
        done = 0
        for piece in pieces:
            n = min(len(piece), plen - done)
            if n <= 0:
                break
            done += dec.update_into(piece[:n], target[done:])
        try:
            dec.finalize()
        except InvalidTag:
            raise IntegrityError(f"segment {counter} failed authentication") from None
        return target[:plen]

    def _cipher(self, counter: int, pieces: Sequence[memoryview], plen: int,
                tag: bytearray) -> Any:
        """A GCM decryptor for the segment, its tag gathered from wherever it lies."""
        skip = plen
        for piece in pieces:
            if skip >= len(piece):
                skip -= len(piece)
                continue
            tag += piece[skip:skip + TAG_BYTES - len(tag)]
            skip = 0
            if len(tag) == TAG_BYTES:
                break
        if len(tag) != TAG_BYTES:
            raise IntegrityError(f"segment {counter} is shorter than its tag")
        return Cipher(algorithms.AES(self._key), modes.GCM(counter_nonce(counter),
                                                           bytes(tag))).decryptor()


def wrap(kek: bytes, key: bytes, aad: bytes) -> bytes:
    """Encrypt a key under a key-encryption key; output is nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, key, aad)


def unwrap(kek: bytes, wrapped: bytes, aad: bytes) -> bytes:
    if len(wrapped) < NONCE_BYTES + TAG_BYTES:
        raise IntegrityError("wrapped key is truncated")
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
    except InvalidTag:
        raise IntegrityError("wrapped key failed authentication") from None


class OneShotMac:
    """`StreamMac`'s tag of data already whole, in one call: AES-GCM of no plaintext with
    the data as associated data, under a key object made once (no cipher context set up
    per message). `nonce` (12 bytes) must never repeat under the key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def tag(self, nonce: bytes, data: bytes) -> bytes:
        return self._aead.encrypt(nonce, b"", data)


class StreamMac:
    """GMAC: AES-256-GCM over associated data only, fed piece by piece. A keyed MAC of long
    streams at several GB/s (AES-NI and carry-less multiply), about 4x cheaper than
    HMAC-SHA256 here. `nonce` (12 bytes) must never repeat under `key`."""

    __slots__ = ("_enc", "_tag")

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        self._tag: bytes | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._enc.authenticate_additional_data(data)

    def digest(self) -> bytes:
        if self._tag is None:
            self._enc.finalize()
            self._tag = self._enc.tag
        return self._tag
