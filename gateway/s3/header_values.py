"""Values a request gives the gateway to send back as response headers (metadata,
Content-Type and the other stored headers, a POST form's fields and redirect, response-*
overrides): one no HTTP response can carry (a control character but tab, bytes that are not
UTF-8, a name that is not a token) is refused at that request with 400 InvalidArgument,
before anything is stored; it used to be stored, and every later GET or HEAD of the object
broke its connection (a POST form and a query string can hold what a header cannot)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.s3.errors import S3Error

_BAD_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")  # surrogates: not UTF-8
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def check_header_values(pairs: Iterable[tuple[str, str]]) -> None:
    """Raise InvalidArgument for the first (name, value) a response header cannot carry."""
    for name, value in pairs:
        if not _TOKEN.match(name):
            raise S3Error("InvalidArgument", "A header name holds a character no HTTP "
                          "header name may hold.")
        if _BAD_VALUE.search(value):
            raise S3Error("InvalidArgument", f"The value of {name} holds a character no HTTP "
                          "header value may hold.", ArgumentName=name)
