"""The whole hostile-input corpus, one table assembled from the per-category modules."""

from __future__ import annotations

from tests.faults import cases_bounds, cases_checkpoint, cases_cli, cases_yaml
from tests.faults.cases import Case

CASES: list[Case] = [*cases_yaml.CASES, *cases_bounds.CASES, *cases_checkpoint.CASES, *cases_cli.CASES]
IDS = [case.id for case in CASES]
if len(set(IDS)) != len(IDS):
    raise ValueError(f"duplicate case ids: {sorted({i for i in IDS if IDS.count(i) > 1})}")
