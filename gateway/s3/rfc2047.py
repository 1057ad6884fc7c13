"""User metadata values and RFC 2047 encoded-words, as AWS documents them ("Working with object
metadata"): a value made of encoded-words ("=?UTF-8?B?w6k=?=") is decoded before it is
stored, and a stored value that is not printable US-ASCII is sent back as one encoded-word
("=?UTF-8?B?...?=", base64 of its UTF-8); a printable US-ASCII value is sent as it is.

A raw non-ASCII header value (curl, rclone) is read as UTF-8, not byte by byte as ISO-8859-1
the way S3 itself reads it (MinIO #21282 calls that an S3 bug: "ö" comes back as "Ã¶").
"""

from __future__ import annotations

import base64
import binascii
import re

_WORD = r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([BbQq])\?([^?\s]*)\?="
_ONE = re.compile(_WORD)
_ALL = re.compile(rf"{_WORD}(?:[ \t]+{_WORD})*")
_PLAIN = re.compile(r"[\t\x20-\x7e]*")
# The charsets a word may name: those of mail and the web. Any other Python codec (utf-7,
# unicode_escape, ...) could decode to a lone surrogate or to values AWS would not make.
_CHARSETS = frozenset({"utf-8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252"})


def decode_value(value: str) -> str:
    """`value` with its encoded-words decoded if it is made of them only (whitespace between
    words is dropped, as RFC 2047 says); unchanged otherwise, or if a word does not decode
    (a charset not in _CHARSETS, bad base64, text that is not UTF-8): nothing the client sent
    is lost."""
    if not value.startswith("=?") or not _ALL.fullmatch(value):
        return value
    out: list[str] = []
    run: list[bytes] = []
    run_charset = ""
    try:
        for m in _ONE.finditer(value):
            charset, kind, text = m.group(1).lower(), m.group(2).upper(), m.group(3)
            if charset not in _CHARSETS:
                return value
            if kind == "B":
                raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            else:
                raw = binascii.a2b_qp(text.replace("_", " ").encode("ascii"), header=True)
            if run and charset != run_charset:
                out.append(b"".join(run).decode(run_charset))
                run = []
            run_charset = charset
            run.append(raw)
        out.append(b"".join(run).decode(run_charset))
        decoded = "".join(out)
        decoded.encode("utf-8")
    except (ValueError, UnicodeError):
        return value
    return decoded


def encode_value(value: str) -> str:
    """`value` as a response header carries it: as it is if printable US-ASCII (or tab),
    else one "=?UTF-8?B?...?=" encoded-word."""
    if _PLAIN.fullmatch(value):
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="
