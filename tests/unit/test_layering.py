"""The layering rules, checked on the source: storage is a library; gateway and nodes are apart;
ops (the operator CLI and cluster tooling) sits on top.

storage never imports gateway, nodes or ops; gateway and nodes never import each other or ops; only
storage/crypto/aead.py imports `cryptography`. Relative imports are resolved too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("storage", "gateway", "nodes", "ops")
FORBIDDEN = {"storage": {"gateway", "nodes", "ops"}, "gateway": {"nodes", "ops"},
             "nodes": {"gateway", "ops"}, "ops": set()}
# gateway/ holds only the ways in: S3, the admin API (and console), the block driver, and the
# process that serves them. Operator tooling lives in ops/.
GATEWAY_TOP = {"__init__", "__main__", "app", "site", "balance", "logs", "metrics", "metrics_cluster",
               "metrics_export"}
# md5: ETags (perf64); etcdcerts: the etcd cluster's X.509 CA and certificates (etcdauth22)
CRYPTO_ALLOWED = {"storage/crypto/aead.py", "storage/crypto/md5.py", "ops/etcdcerts.py"}


def module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(path: Path) -> set[str]:
    """Every absolute module name the file imports (relative imports resolved)."""
    pkg = module_name(path)
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    return imports_of(path.read_text(), pkg, str(path))


def imports_of(source: str, pkg: list[str], filename: str = "<src>") -> set[str]:
    """Imported module names of `source`, a module inside package `pkg` (dotted parts)."""
    tree = ast.parse(source, filename=filename)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.add(node.args[0].value)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.add(node.args[0].value)
    return out


def sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 20, "source tree not found"
    return files


def top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_never_imports_forbidden_layers(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports(path):
            if top(name) in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_only_aead_imports_cryptography() -> None:
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in sources() for n in imports(p)
           if top(n) == "cryptography" and str(p.relative_to(ROOT)) not in CRYPTO_ALLOWED]
    assert not bad, "\n".join(bad)
    assert any(top(n) == "cryptography" for n in imports(ROOT / "storage/crypto/aead.py"))


def test_checker_sees_relative_and_dynamic_imports() -> None:
    """The checker itself: relative and dynamic imports resolve to their real names."""
    src = ("from .. import gateway_thing\nfrom ..crypto import aead\nimport importlib\n"
           "importlib.import_module('gateway.app')\n__import__('nodes.app')\n")
    names = imports_of(src, ["storage", "shards"])
    assert {"storage.gateway_thing", "storage.crypto.aead", "gateway.app",
            "nodes.app"} <= names
    assert "storage.crypto.aead" in imports(ROOT / "storage" / "crypto" / "keys.py") or \
        "storage.crypto" in imports(ROOT / "storage" / "crypto" / "keys.py")


def test_node_only_code_lives_under_nodes() -> None:
    """A storage module that only node code imports (the node's disk store, its small-file
    I/O) belongs under nodes/: storage/ is what gateways and nodes share. A module imported
    only by nodes/ and by such node-only modules counts as node-only too. Test hooks stay
    together in storage/testing/ whoever reads them (their TESSERA_TEST_* names are read
    only there: test_config_env)."""
    importers: dict[str, set[str]] = {}
    for p in sources():
        for name in imports(p):
            importers.setdefault(name, set()).add(".".join(module_name(p)))
    storage_mods = [".".join(module_name(p)) for p in sorted((ROOT / "storage").rglob("*.py"))
                    if not p.is_relative_to(ROOT / "storage" / "testing")]
    node_only: set[str] = set()
    changed = True
    while changed:
        changed = False
        for mod in storage_mods:
            users = importers.get(mod, set()) - {mod}
            if mod not in node_only and users and all(
                    top(u) == "nodes" or u in node_only for u in users):
                node_only.add(mod)
                changed = True
    assert sorted(node_only) == [], f"only nodes/ imports these, move them: {sorted(node_only)}"


def test_gateway_top_level_holds_only_ways_in() -> None:
    """CLIs, the local cluster and test harnesses do not creep back into gateway/."""
    extra = sorted(p.stem for p in (ROOT / "gateway").glob("*.py") if p.stem not in GATEWAY_TOP)
    assert not extra, f"move to ops/ (operator tooling) or a gateway sub-package: {extra}"
