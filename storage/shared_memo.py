"""Values derived from a shared decoded record, computed once per instance.

GET and HEAD read the current version through `ObjectReads._current_shared`: one decoded
instance per stored record, handed to every read until the record changes, and never
modified by its callers. Whatever is computed from such an instance's fields alone (its
response headers, its data key's cipher under a given KEK) stays right for the instance's
life and is dropped with it. An instance that is not shared (decoded for one request, and
perhaps edited by it) carries no memo: every value is computed afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
_MEMO = "_shared_memo"  # in the instance's __dict__: not a dataclass field, never encoded


def share(record: Any) -> None:
    """Mark `record` as shared (read only from now on): `derived` values are kept."""
    record.__dict__[_MEMO] = {}


def derived(record: Any, name: Hashable, make: Callable[[], T]) -> T:
    """`make()`, computed once per shared `record` and `name`; every time otherwise."""
    memo = record.__dict__.get(_MEMO)
    if memo is None:
        return make()
    try:
        return memo[name]  # type: ignore[no-any-return]
    except KeyError:
        out = memo[name] = make()
        return out
