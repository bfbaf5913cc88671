"""The architecture as a contract: the layering (import-linter), no import cycles, ruff-clean code, and a wheel
whose only top-level package is memstore (the repo's adapters/ ships inside it as memstore.adapters)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# what may import the ways in: the ways in themselves, the CLI, the evals and the test fakes
OUTER = ("cli", "eval", "testing")


def test_layering_contracts_hold() -> None:
    out = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_the_code_is_ruff_clean() -> None:
    """The style rules of pyproject's [tool.ruff] hold everywhere (a long help string once slipped through)."""
    out = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_core_never_imports_the_adapters() -> None:
    """import-linter cannot see memstore.adapters (it lives in adapters/), so the core is read here."""
    offenders = []
    for path in sorted((ROOT / "memstore").rglob("*.py")):
        rel = path.relative_to(ROOT / "memstore")
        if rel.parts[0] in OUTER or rel == Path("__init__.py"):  # the package root re-exports MemoryClient lazily
            continue
        bad = {n for n in _imports(path) if n == "memstore.adapters" or n.startswith("memstore.adapters.")
               or n == "adapters" or n.startswith("adapters.")}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert not offenders


def test_no_import_cycles_between_modules() -> None:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("memstore", exclude_type_checking_imports=True)
    mods = [m for m in graph.modules if m.startswith("memstore")]
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("memstore") and i != m}
             for m in mods}
    cycles = []
    for m in mods:  # a cycle through m: m reaches itself
        seen, todo = set(), list(edges[m])
        while todo:
            n = todo.pop()
            if n == m:
                cycles.append(m)
                break
            if n not in seen:
                seen.add(n)
                todo.extend(edges.get(n, ()))
    assert not cycles, f"modules on an import cycle: {sorted(cycles)}"


def test_the_wheel_installs_only_memstore(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("memstore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"memstore"}
    assert "memstore/adapters/openai/client.py" in names and "memstore/adapters/server/app.py" in names
    assert "memstore/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith("_wheel_layout.py")]


def test_a_source_install_serves_memstore_adapters_and_no_top_level_adapters(tmp_path: Path) -> None:
    code = ("import importlib.util, memstore.adapters.openai.client as c, memstore\n"
            "print(c.MemoryClient is memstore.MemoryClient, importlib.util.find_spec('adapters') is None)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
