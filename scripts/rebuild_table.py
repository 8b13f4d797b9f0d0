# ruff: noqa: INP001 - a generator run by path; the table it writes is committed
"""Write the "what reruns when" table of README.md and docs/stages.md from the rebuild matrix the tests record.

    python scripts/rebuild_table.py

``tests/integration/test_rebuild_matrix.py`` pins, per edit and target, the stages a build runs, in
``tests/unit/data/rebuild_matrix.json``; this script renders that file between the table's marker comments
of both documents, and ``tests/unit/test_rebuild_doc.py`` fails when one differs.  The table is never edited by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "tests/unit/data/rebuild_matrix.json"
DOC = ROOT / "docs/stages.md"
DOCS = (ROOT / "README.md", DOC)
BEGIN, END = "<!-- rebuild-table:begin -->", "<!-- rebuild-table:end -->"
ORDER = ("fetch", "convert", "export", "engine", "index", "config", "repo", "bench", "compare")
# Table columns: the model and target of the matrix cell each shows, and whether its bench task counts.
# ``{model}`` is the row's subject (``hub`` for the Hub edit, else ``local``, which has a ``bench:`` block).
COLUMNS = {"cpu": ("cpu/{model}", False), "cpu, with `bench:`": ("cpu/{model}", True), "trt (fake trtexec)": ("trt/{model}", False)}


def _cell(stages: list[str] | None, *, bench: bool) -> str:
    if stages is None:
        return "-"
    shown = [s for s in stages if bench or s != "bench"]
    return ", ".join(sorted(shown, key=ORDER.index)) or "nothing"


def render(matrix: dict[str, Any]) -> str:
    """The markdown table: one row per edit, one column per target (and with a benchmark)."""
    lines = ["| edit | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in matrix.values():
        ran = row["ran"]
        model = "hub" if any(ran.get(f"{t}/hub") for t in ("cpu", "trt")) else "local"
        cells = [
            _cell(None if model == "hub" and bench else ran.get(where.format(model=model)), bench=bench)
            for where, bench in COLUMNS.values()
        ]
        lines.append(f"| {row['edit']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replaced(doc: str, table: str) -> str:
    head, rest = doc.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main() -> None:
    matrix = json.loads(MATRIX.read_text(encoding="utf-8"))
    for doc in DOCS:
        doc.write_text(replaced(doc.read_text(encoding="utf-8"), render(matrix)), encoding="utf-8")


if __name__ == "__main__":
    main()
