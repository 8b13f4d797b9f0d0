"""The "what reruns when" table of README.md and docs/stages.md is the rebuild matrix the integration test pins, rendered."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "tests/unit/data/rebuild_matrix.json"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rebuild_table", ROOT / "scripts/rebuild_table.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doc_table(text: str, begin: str, end: str) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def test_the_doc_tables_are_the_recorded_matrix() -> None:
    table = script()
    matrix = json.loads(MATRIX.read_text(encoding="utf-8"))
    assert [p.name for p in table.DOCS] == ["README.md", "stages.md"]
    for doc in table.DOCS:
        assert doc_table(doc.read_text(encoding="utf-8"), table.BEGIN, table.END) == table.render(matrix), doc


def test_an_edited_cell_is_seen() -> None:
    table = script()
    matrix = json.loads(MATRIX.read_text(encoding="utf-8"))
    first = next(iter(matrix.values()))
    first["ran"]["cpu/local"] = [*first["ran"]["cpu/local"], "config"]
    assert doc_table(table.DOC.read_text(encoding="utf-8"), table.BEGIN, table.END) != table.render(matrix)


def test_every_edit_has_a_row_for_each_target() -> None:
    matrix = json.loads(MATRIX.read_text(encoding="utf-8"))
    for row in matrix.values():
        assert set(row["ran"]) == {"cpu/local", "cpu/hub", "trt/local", "trt/hub"}
