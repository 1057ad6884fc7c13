"""Why a node is not up, in words: the health probe's last error made readable.

A refusing node's error is `node ID: health 401 {"error": ..., "message": ...}`; `tessera
status` and the console's node cards both show this rendering, not the raw text.
"""

from __future__ import annotations

import json

CLOCK_HINT = ("its clock is off from this gateway's by more than [cluster] "
              "node_request_window_s; sync the hosts' clocks (NTP)")


def node_reason(node_id: str, last_error: str) -> str:
    """`last_error` without the node's id and JSON, with what to do for a skewed clock."""
    if not last_error:
        return ""
    try:  # a node's refusal carries its JSON error body
        msg = json.loads(last_error[last_error.index("{"):])["message"]
        why = f"{last_error[:last_error.index('{')].strip()}, {msg}"
    except (ValueError, KeyError, TypeError):
        why = last_error
    why = why.removeprefix(f"node {node_id}: ")
    if "replay window" in last_error:
        why += f": {CLOCK_HINT}"
    return why
