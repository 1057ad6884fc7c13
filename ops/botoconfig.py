"""botocore settings for the boto3 clients of our own tools, tests and benchmarks.

botocore's `retries={"max_attempts": N}` counts RETRIES: botocore's args.py turns it into
`total_max_attempts = N + 1`, so 1 means two attempts; a client without `retries` makes
up to five (legacy mode). A retry hides an answer: a request whose answer was lost is sent
again and the caller sees only the second answer (a conditional PUT that applied answers
412, a 500 or a reset connection turns into a 200). A client that must see every answer
(a test counting outcomes, a benchmark counting errors) makes one attempt: `no_retries`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # boto3/botocore are test and tool dependencies, not the server's
    from botocore.config import Config


def no_retries(**config: Any) -> Config:
    """A botocore Config (other settings: `config`) whose client makes exactly one attempt
    per request: `total_max_attempts` counts the first attempt, `max_attempts` does not."""
    from botocore.config import Config

    return Config(retries={"total_max_attempts": 1}, **config)
