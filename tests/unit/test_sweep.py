"""compare: the best row of each variant's benchmark within the limits, and what it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.stage import Stage, StageContext
from tasks.stages import compare
from tests.helpers import read_json


def _table(path: Path, rows: list[tuple[int, float, int]]) -> None:
    lines = ["Concurrency,Inferences/Second,p99 latency"] + [f"{c},{t},{p}" for c, t, p in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, ("m@b-32", 4.0, 900.0)),  # the highest throughput overall
        ({"p99 latency": 5000.0}, ("m@b-8", 4.0, 600.0)),  # the highest within the bound
        ({"p99 latency": 1000.0}, ("m@b-8", 1.0, 300.0)),
        ({"p99 latency": 10.0}, None),
    ],
)
def test_compare_picks_the_best_row_within_the_limits(
    tmp_path: Path, limits: dict[str, float], expected: tuple[str, float, float] | None
) -> None:
    tables = {"m@b-8": [(1, 300.0, 900), (4, 600.0, 4000)], "m@b-32": [(1, 250.0, 1200), (4, 900.0, 9000)]}
    inputs = {}
    for name, rows in tables.items():
        (tmp_path / name).mkdir()
        _table(tmp_path / name / f"{name}.csv", rows)
        inputs[name] = tmp_path / name
    params = {
        "name": "m",
        "compare": {"maximize": "Inferences/Second", "limits": limits},
        "variants": {"m@b-8": {"engine.max_batch_size": 8}, "m@b-32": {"engine.max_batch_size": 32}},
    }
    out = tmp_path / "out"
    out.mkdir()
    stage = Stage("compare", "m", params, out, compare.action, "compare")
    compare.action(StageContext(stage, out, inputs))
    best = read_json(out / "best.json")["best"]
    if expected is None:
        assert best is None
    else:
        assert isinstance(best, dict)
        assert (best["variant"], best["concurrency"], best["value"]) == expected
        assert best["promote"] == f"doit promote:{expected[0]}"
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "Variant,engine.max_batch_size,Concurrency,Inferences/Second,p99 latency"
    assert summary[1:] == ["m@b-8,8,1,300.0,900", "m@b-8,8,4,600.0,4000", "m@b-32,32,1,250.0,1200", "m@b-32,32,4,900.0,9000"]
