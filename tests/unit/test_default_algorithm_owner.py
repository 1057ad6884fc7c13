"""S3's default checksum algorithm has one owner (the project's one-way rule): a second
definition could drift and make the gateway compute one default while storage combines another."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _definitions(name: str) -> list[str]:
    """Every module-level assignment of `name` in the service's packages."""
    found = []
    for pkg in ("gateway", "storage", "nodes", "ops"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                targets = (node.targets if isinstance(node, ast.Assign)
                           else [node.target] if isinstance(node, ast.AnnAssign) else [])
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    found.append(str(path.relative_to(ROOT)))
    return found


def test_default_algorithm_is_defined_once() -> None:
    assert _definitions("DEFAULT_ALGORITHM") == ["storage/multipart_checksums.py"]


def test_the_gateway_name_is_the_storage_one() -> None:
    from gateway.s3 import checksums
    from storage import multipart_checksums
    assert checksums.DEFAULT_ALGORITHM == multipart_checksums.DEFAULT_ALGORITHM == "CRC64NVME"
