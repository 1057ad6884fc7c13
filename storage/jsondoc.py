"""JSON from a client (a request body, header or form field), parsed so that every malformed
document is one ValueError.

`json.loads` raises RecursionError, not ValueError, for arrays or objects nested past
Python's recursion limit (~1,000 levels: 2 KB of '['), and callers that caught ValueError
answered 500 InternalError: an unauthenticated console login, a bucket policy, a POST form's
policy, an SSE-KMS encryption context.
"""

from __future__ import annotations

import json
from typing import Any


class TooDeep(ValueError):
    """A JSON document nested past the recursion limit."""


def loads(raw: str | bytes | bytearray) -> Any:
    """`json.loads(raw)`; ValueError (`TooDeep`) for a document nested too deep to parse."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise TooDeep("JSON nested too deep") from None
