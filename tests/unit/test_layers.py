"""The layers of ``tasks/``: imports only go down, and no two modules import each other (directly or round a loop)."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Lowest first: a module may import its own layer and the layers before it.
LAYERS = ("core", "console", "tools", "families", "triton", "bench", "spec", "stages", "commands")
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``: no import happens at run time


def module_name(package_root: Path, path: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(package_root: Path) -> Iterator[Path]:
    # The Triton python models are loaded by file path from a repository and import nothing of tasks.
    yield from (p for p in sorted(package_root.rglob("*.py")) if "templates" not in p.relative_to(package_root).parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in modules else base


def imports(package_root: Path) -> list[Import]:
    """Every import of one ``tasks`` module by another, with its line."""
    files = {module_name(package_root, p): p for p in python_files(package_root)}
    found: list[Import] = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_only = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found += [
                    Import(name, t, node.lineno, node.lineno in type_only)
                    for t in _targets(node, package, set(files))
                    if t in files and t != name
                ]
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(package_root: Path) -> list[str]:
    """``a (layer) imports b (higher layer)`` for every import against the order, type-only ones included."""
    bad = []
    for imp in imports(package_root):
        src, dst = layer(imp.source), layer(imp.target)
        if src is not None and dst is not None and dst > src:
            bad.append(f"{imp.source}:{imp.line} ({LAYERS[src]}) imports {imp.target} ({LAYERS[dst]})")
    return bad


def cycles(package_root: Path) -> list[list[str]]:
    """Import loops between modules (run-time imports; a package's ``__init__`` importing its children counts too)."""
    edges: dict[str, set[str]] = {}
    for imp in imports(package_root):
        if not imp.type_only:
            edges.setdefault(imp.source, set()).add(imp.target)
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def test_every_module_sits_in_a_layer() -> None:
    outside = [module_name(ROOT / "tasks", p) for p in python_files(ROOT / "tasks") if layer(module_name(ROOT / "tasks", p)) is None]
    assert outside == ["tasks"], "modules outside the layers: " + ", ".join(outside)


def test_imports_only_go_down() -> None:
    assert upward_imports(ROOT / "tasks") == []


def test_no_import_cycles() -> None:
    assert cycles(ROOT / "tasks") == []


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in python_files(ROOT / "tasks")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "tasks", tmp_path / "tasks", ignore=shutil.ignore_patterns("__pycache__", "templates"))
    return tmp_path / "tasks"


def _plant(path: Path, line: str) -> None:
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition("from __future__ import annotations\n")
    assert sep, path
    path.write_text(f"{head}{sep}{line}\n{rest}", encoding="utf-8")


def test_a_planted_upward_import_is_found(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    _plant(package / "core" / "fsops.py", "from tasks.stages import graph")
    assert upward_imports(package) == ["tasks.core.fsops:4 (core) imports tasks.stages.graph (stages)"]


def test_a_planted_relative_upward_import_is_found(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    _plant(package / "families" / "converters" / "sharding.py", "from ...commands import serve")
    assert [b.split(" imports ")[1] for b in upward_imports(package)] == ["tasks.commands.serve (commands)"]


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    _plant(package / "core" / "errors.py", "from tasks.core import lock")
    found = cycles(package)
    assert found, "the planted loop errors -> lock -> errors was not found"
    assert {"tasks.core.errors", "tasks.core.lock"} <= set(found[0])


def test_a_type_only_import_is_no_cycle_but_still_must_go_down(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    _plant(
        package / "core" / "errors.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tasks.core import lock\n    from tasks.spec import schema",
    )
    assert cycles(package) == []
    assert [b.split(" imports ")[1] for b in upward_imports(package)] == ["tasks.spec.schema (spec)"]
