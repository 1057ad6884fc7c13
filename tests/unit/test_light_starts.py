"""What a start does before its heavy imports stays light, so that work runs beside them.

`python -m gateway` (worker 0) starts the other workers before it imports `gateway.app`;
`tessera up` starts the nodes before it imports `storage.cluster` (for the first start's
tenant and keys). Each is checked in a fresh interpreter: importing the entry module must
not pull the heavy one in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("entry", "heavy"), [("gateway.__main__", "gateway.app"),
                                              ("ops.localcluster", "storage.cluster")])
def test_entry_module_does_not_import_the_heavy_one(entry: str, heavy: str) -> None:
    code = f"import sys, {entry}; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "False", f"{entry} imports {heavy} at once"
