"""The dependency rule (README, Architecture), checked on every import statement of the tree,
lazy imports inside functions included: the README's list of exceptions is empty because this
test keeps it so."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Layer (path prefix) -> project modules it must never import (prefix match on the module).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "app/domain/": ("app.services", "app.http", "app.bootstrap", "app.settings", "app.cli",
                    "app.worker", "app.wsgi_server", "app.bench", "adapters", "flask",
                    "sqlalchemy", "requests", "jwt", "marshmallow"),
    "app/services/": ("app.http", "app.bootstrap", "app.settings", "app.cli", "app.worker",
                      "app.wsgi_server", "app.bench", "adapters", "flask", "sqlalchemy",
                      "requests", "jwt", "marshmallow"),
    "app/http/": ("adapters", "sqlalchemy", "app.settings", "app.cli", "app.worker"),
    "adapters/": ("app.settings", "app.http", "app.bootstrap", "app.cli", "app.worker",
                  "app.bench"),
}
PROJECT = ("app", "adapters")


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module))
            # `from app import http` names a module too
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _violations(root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((root / layer).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if "/migrations/" in relative:
                continue
            for line, module in _imports(path, root):
                if any(module == bad or module.startswith(bad + ".") for bad in forbidden):
                    problems.append(f"{relative}:{line} imports {module}")
    return problems


def test_no_layer_imports_what_the_dependency_rule_forbids() -> None:
    assert _violations() == []


def test_domain_imports_only_the_standard_library_and_itself() -> None:
    problems = []
    for path in sorted((ROOT / "app/domain").rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in PROJECT and not module.startswith("app.domain") and module != "app":
                problems.append(f"{path.name}:{line} imports {module}")
    assert problems == []


@pytest.mark.parametrize("source, expected", [
    ("from adapters.sql import schema\n", "adapters.sql"),
    ("def f():\n    import adapters.tokens\n", "adapters.tokens"),
    ("from ..http import api\n", "app.http"),
])
def test_the_check_sees_lazy_relative_and_from_imports(tmp_path: Path, source: str,
                                                       expected: str) -> None:
    probe = tmp_path / "app" / "services" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    assert any(expected in v for v in _violations(tmp_path))
