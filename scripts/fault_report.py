# ruff: noqa: T201, INP001 - a report generator run by path; the table it writes is committed
"""Run the hostile-input corpus (``tests/faults``) and write its table into ``docs/reliability.md``.

    PATH=.venv/bin:$PATH python scripts/fault_report.py [--out FILE] [--only ID,ID] [--keep DIR]

Each case is a real ``doit`` process in a copy of a tiny project whose model ``tiny`` is already built;
its outcome is one of clear (one ERROR line naming the file and key), unclear (non-zero exit without a
traceback, but the line does not name both, is too long, or there are several), traceback, hang (no answer
within the case's timeout) or accepted (exit 0).  The table goes between the markers of the document;
``--out`` writes the whole document elsewhere instead (to compare two branches).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.corpus import CASES  # noqa: E402 - the checkout's tests package, after the path is set
from tests.faults.runner import OUTCOMES, Outcome, build_base, run_case  # noqa: E402
from tests.helpers import build_tiny_bert  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- fault-table:begin -->"
END = "<!-- fault-table:end -->"
SHOWN = 160  # characters of the error line kept in the table


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    flat = " ".join(text.split())
    flat = flat if len(flat) <= SHOWN else flat[: SHOWN - 1] + "…"
    return flat.replace("|", "\\|").replace("`", "'")


def side_effects(outcome: Outcome) -> str:
    """What a run did besides answering: files of the guarded model changed, processes left running."""
    found = [f"{len(outcome.touched)} guarded files changed"] if outcome.touched else []
    found += [f"{len(outcome.left_running)} processes left"] if outcome.left_running else []
    return ", ".join(found) or "-"


def table(outcomes: list[Outcome]) -> str:
    counts = Counter(o.outcome for o in outcomes)
    totals = ", ".join(f"{kind} {counts.get(kind, 0)}" for kind in OUTCOMES)
    harmed = sum(side_effects(o) != "-" for o in outcomes)
    rows = [f"{len(outcomes)} cases: {totals}; {harmed} with side effects.", ""]
    rows += ["| case | category | outcome | side effects | error line |", "|---|---|---|---|---|"]
    rows += [f"| {o.case.id} | {o.case.category} | {o.outcome} | {side_effects(o)} | {cell(o.line) or '-'} |" for o in outcomes]
    return "\n".join(rows)


def replace_table(document: str, body: str) -> str:
    if BEGIN not in document or END not in document:
        raise SystemExit(f"{DOC}: the markers {BEGIN} and {END} are missing")
    head, _, rest = document.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, help="write the document here instead of docs/reliability.md")
    parser.add_argument("--only", default="", help="comma-separated case ids (a partial table)")
    args = parser.parse_args()
    chosen = [c for c in CASES if not args.only or c.id in args.only.split(",")]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="fault-report-") as temp:
        folder = Path(temp)
        base = build_base(folder / "base", build_tiny_bert(folder / "ckpt"))
        started = time.monotonic()
        for number, case in enumerate(chosen, start=1):
            outcome = run_case(case, base, folder / f"case-{number}")
            outcomes.append(outcome)
            print(f"[{number}/{len(chosen)}] {case.id}: {outcome.outcome} ({outcome.seconds:.1f} s) {outcome.line[:120]}", flush=True)
        print(f"corpus ran in {time.monotonic() - started:.0f} s", flush=True)
    document = replace_table(DOC.read_text(encoding="utf-8"), table(outcomes))
    (args.out or DOC).write_text(document, encoding="utf-8")
    print(table(outcomes).splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
