"""RFC 2047 words in user metadata decode only in the charsets of mail and the web; any other
Python codec name (utf-7, unicode_escape: a lone surrogate, then a 500 when the value was
encoded, review14b #3) keeps the value literal, as does text that is not valid in its charset."""

from __future__ import annotations

import pytest

from gateway.s3.rfc2047 import decode_value, encode_value


@pytest.mark.parametrize(("sent", "stored"), [
    ("=?UTF-8?B?w6k=?=", "é"),
    ("=?us-ascii?Q?abc?=", "abc"),
    ("=?ISO-8859-1?Q?=E9?=", "é"),
    ("=?iso-8859-15?Q?=A4?=", "€"),
    ("=?WINDOWS-1252?Q?=80?=", "€"),
    ("=?utf-7?Q?+2AA-?=", "=?utf-7?Q?+2AA-?="),
    ("=?unicode_escape?Q?=5Cud800?=", "=?unicode_escape?Q?=5Cud800?="),
    ("=?raw_unicode_escape?Q?=5Cud800?=", "=?raw_unicode_escape?Q?=5Cud800?="),
    ("=?utf8?B?w6k=?=", "=?utf8?B?w6k=?="),
    ("=?latin1?Q?=E9?=", "=?latin1?Q?=E9?="),
    ("=?UTF-8?Q?=ED=A0=80?=", "=?UTF-8?Q?=ED=A0=80?="),  # an encoded surrogate: not UTF-8
    ("=?UTF-8?B?w6k=?= =?utf-7?Q?+2AA-?=", "=?UTF-8?B?w6k=?= =?utf-7?Q?+2AA-?="),
])
def test_only_known_charsets_decode(sent: str, stored: str) -> None:
    got = decode_value(sent)
    assert got == stored
    got.encode("utf-8")  # what the 2 KB check and the record do
    encode_value(got).encode("ascii")
