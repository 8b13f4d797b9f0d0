"""docs/reliability.md lists exactly the fault corpus's cases, so the table cannot drift from the suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.faults.corpus import CASES
from tests.faults.runner import OUTCOMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def table_rows() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    body = text.split("<!-- fault-table:begin -->", 1)[1].split("<!-- fault-table:end -->", 1)[0]
    rows = [line.strip("|").split(" | ") for line in body.splitlines() if line.startswith("| ") and not line.startswith("| case |")]
    return [[cell.strip() for cell in row] for row in rows]


def test_the_table_lists_every_case_once_in_corpus_order() -> None:
    assert [row[0] for row in table_rows()] == [case.id for case in CASES]


def test_each_row_gives_the_case_category_and_a_known_outcome() -> None:
    categories = {case.id: case.category for case in CASES}
    for case_id, category, outcome, *_ in table_rows():
        assert category == categories[case_id]
        assert outcome in OUTCOMES


def test_the_totals_line_matches_the_rows() -> None:
    counts = Counter(row[2] for row in table_rows())
    harmed = sum(row[3] != "-" for row in table_rows())
    expected = f"{len(CASES)} cases: " + ", ".join(f"{kind} {counts.get(kind, 0)}" for kind in OUTCOMES) + f"; {harmed} with side effects."
    assert expected in DOC.read_text(encoding="utf-8")


def test_the_corpus_is_large_and_covers_every_category_of_the_issue() -> None:
    categories = Counter(case.category for case in CASES)
    assert len(CASES) >= 70
    assert set(categories) >= {"yaml-syntax", "yaml-type", "bounds", "sweep", "size", "file-names", "checkpoint", "command-line", "tool"}
