"""Layers point one way: the engine (harness/) imports the suites (tasks/) and methods (methods/), never the reverse."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", ["tasks", "methods"])
def test_suites_and_methods_never_import_the_engine(package):
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / package).rglob("*.py")) if "harness" in _imports(p)]
    assert offenders == []
