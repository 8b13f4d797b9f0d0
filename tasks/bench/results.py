"""Benchmark outputs: a perf_analyzer-shaped CSV, a JSON with the same numbers and the run's facts, a PNG.

CSV cells follow the tools' habits: perf_analyzer's microsecond columns as integers, other
numbers with three decimals, an empty cell for anything not measured.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.bench import metrics
from tasks.bench.metrics import Row

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_MICROSECOND_COLUMNS = frozenset(metrics.PA_COLUMNS[2:])


def _cell(column: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    if column == metrics.CONCURRENCY or column in _MICROSECOND_COLUMNS:
        return str(round(value))
    return f"{value:.3f}"


def csv_text(columns: Sequence[str], rows: Sequence[Row]) -> str:
    """Header plus one line per row, rows in the order given (the caller sorts by concurrency)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(column, row.get(column)) for column in columns])
    return out.getvalue()


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Row]) -> None:
    path.write_text(csv_text(columns, rows), encoding="utf-8")


def write_json(
    path: Path, metadata: Mapping[str, Any], columns: Sequence[str], rows: Sequence[Row], levels: Sequence[Mapping[str, Any]]
) -> None:
    table = [{c: row.get(c) for c in columns} for row in rows]
    document = {**metadata, "columns": list(columns), "rows": table, "levels": list(levels)}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _points(rows: Sequence[Row]) -> list[tuple[float, float, float]]:
    p99 = metrics.percentile_column(99)
    out = []
    for row in rows:
        latency, throughput, concurrency = row.get(p99), row.get(metrics.THROUGHPUT), row.get(metrics.CONCURRENCY)
        if latency is not None and throughput is not None and concurrency is not None:
            out.append((latency, throughput, concurrency))
    return out


@contextmanager
def latency_plot(path: Path, title: str, size: tuple[float, float]) -> Iterator[Axes]:
    """Axes for throughput against p99 latency (ms), saved as a PNG at ``path`` when the block ends."""
    import matplotlib as mpl  # noqa: PLC0415 - costs a second; only bench and compare draw

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=size, dpi=100)
    try:
        yield ax
        ax.set_xlabel("p99 latency (ms)")
        ax.set_ylabel("throughput (inferences/s)")
        ax.set_title(title)
        ax.grid(visible=True, alpha=0.3)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        fig.tight_layout()
        # No timestamp in the file: the same numbers draw the same bytes.
        fig.savefig(path, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


def write_plot(path: Path, title: str, rows: Sequence[Row]) -> None:
    """Throughput against p99 latency, one labelled point per concurrency level."""
    points = [(latency / 1000.0, throughput, concurrency) for latency, throughput, concurrency in _points(rows)]
    with latency_plot(path, title, (6.4, 4.4)) as ax:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        for x, y, c in points:
            ax.annotate(f"c={c:g}", (x, y), textcoords="offset points", xytext=(6, -10))
