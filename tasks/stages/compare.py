"""compare: the benchmark of every variant of a sweep in one table and one plot, and the best variant named.

``results/<m>/<target>/summary.csv`` holds each variant's rows (its swept values, then the bench CSV's own
columns and cells, unchanged); ``summary.png`` draws throughput against p99 latency, one curve per
variant; ``best.json`` names the variant and concurrency that maximise ``compare.maximize`` among the
rows within every ``compare.limits`` bound (same units as the CSV: latencies in microseconds).
Nothing is promoted here: ``doit promote:<variant>`` is the explicit step that serves it as ``repos/<m>``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.bench import metrics, results
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.spec.modelspec import ModelSpec
from tasks.stages.bench import RESULTS
from tasks.stages.graph import Graph, ModelGraph

log = logging.getLogger(__name__)

CODE_VERSION = "1"
OUTPUTS = ("summary.csv", "summary.png", "best.json")
VARIANT = "Variant"

Table = list[dict[str, str]]


def output_files(model: str, target: str) -> dict[str, Path]:
    return {name: RESULTS / model / target / name for name in OUTPUTS}


def read_table(path: Path) -> tuple[list[str], Table]:
    """A bench CSV: its header and its rows as the cells were written."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except OSError as exc:
        raise UserError("compare", f"cannot read {path}: {exc.strerror}") from None


def number(cell: str | None) -> float | None:
    """A CSV cell as a number; an empty cell (not measured) is None."""
    try:
        value = float(cell) if cell else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Best:
    variant: str
    row: Mapping[str, str]
    value: float


def within(row: Mapping[str, str], limits: Mapping[str, float]) -> bool:
    """Every bounded column measured and at most its bound (an unmeasured one cannot be shown to comply)."""
    values = {column: number(row.get(column)) for column in limits}
    return all(v is not None and v <= limits[c] for c, v in values.items())


def choose(tables: Mapping[str, Table], maximize: str, limits: Mapping[str, float]) -> Best | None:
    """The row with the highest ``maximize`` within ``limits``; ties go to the earlier variant, then lower concurrency."""
    best: Best | None = None
    for variant, rows in tables.items():
        for row in rows:
            value = number(row.get(maximize))
            if value is None or not within(row, limits):
                continue
            if best is None or value > best.value:
                best = Best(variant, row, value)
    return best


def summary_text(tables: Mapping[str, Table], columns: Sequence[str], settings: Mapping[str, Mapping[str, Any]]) -> str:
    paths = list(next(iter(settings.values()), {}))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([VARIANT, *paths, *columns])
    for variant, rows in tables.items():
        swept = [json.dumps(settings[variant][p]) if not isinstance(settings[variant][p], str) else settings[variant][p] for p in paths]
        for row in rows:
            writer.writerow([variant, *swept, *(row.get(c, "") for c in columns)])
    return out.getvalue()


def write_plot(path: Path, title: str, tables: Mapping[str, Table], best: Best | None, limits: Mapping[str, float]) -> None:
    """Throughput against p99 latency, one curve per variant, the best point starred, a p99 bound drawn."""
    p99 = metrics.percentile_column(99)
    with results.latency_plot(path, title, (7.6, 4.8)) as ax:
        for variant, rows in tables.items():
            points = [(number(r.get(p99)), number(r.get(metrics.THROUGHPUT))) for r in rows]
            xy = [(x / 1000.0, y) for x, y in points if x is not None and y is not None]
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=variant.split("@", 1)[-1])
        if p99 in limits:
            ax.axvline(limits[p99] / 1000.0, color="grey", linestyle="--", label="p99 limit")
        if best is not None:
            x, y = number(best.row.get(p99)), number(best.row.get(metrics.THROUGHPUT))
            if x is not None and y is not None:
                ax.plot([x / 1000.0], [y], marker="*", markersize=16, color="black", linestyle="none", label="best")
        ax.legend(fontsize="small")


def best_document(name: str, objective: Mapping[str, Any], best: Best | None, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {"model": name, "objective": dict(objective), "variants": len(settings)}
    if best is None:
        document["best"] = None
        return document
    document["best"] = {
        "variant": best.variant,
        "settings": dict(settings[best.variant]),
        "concurrency": number(best.row.get(metrics.CONCURRENCY)),
        "value": best.value,
        "row": dict(best.row),
        "promote": f"doit promote:{best.variant}",
    }
    return document


def load_tables(ctx: StageContext) -> tuple[list[str], dict[str, Table]]:
    """Every variant's bench CSV, in sweep order; all must share one header."""
    header: list[str] | None = None
    tables: dict[str, Table] = {}
    for variant in ctx.params["variants"]:
        columns, rows = read_table(ctx.inputs[variant] / f"{variant}.csv")
        if header is not None and columns != header:
            raise UserError(f"compare:{ctx.params['name']}", f"{variant}.csv has other columns than the other variants' CSVs")
        header, tables[variant] = columns, rows
    return header or [], tables


def describe(best: Best | None, objective: Mapping[str, Any]) -> str:
    limits = ", ".join(f"{c} <= {v:g}" for c, v in objective["limits"].items()) or "no limits"
    if best is None:
        return f"no variant has a row with {objective['maximize']} measured within {limits}"
    concurrency = best.row.get(metrics.CONCURRENCY, "?")
    found = f"{objective['maximize']} {best.value:g} ({limits})"
    return f"best: {best.variant} at concurrency {concurrency}: {found}; serve it with doit promote:{best.variant}"


def action(ctx: StageContext) -> None:
    params = ctx.params
    objective, settings, name = params["compare"], params["variants"], params["name"]
    columns, tables = load_tables(ctx)
    best = choose(tables, objective["maximize"], objective["limits"])
    (ctx.out / "summary.csv").write_text(summary_text(tables, columns, settings), encoding="utf-8")
    write_plot(ctx.out / "summary.png", f"{name}: {len(tables)} variants", tables, best, objective["limits"])
    document = best_document(name, objective, best, settings)
    (ctx.out / "best.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    log.info("compare:%s: %s", name, describe(best, objective))


def stage(graph: Graph, spec: ModelSpec) -> Stage:
    """``compare:<m>``: every variant's benchmark in one table and plot, and the best variant named."""
    benches = {v.variant: graph.stage_of("bench", v.variant) for v in spec.variants}
    settings = {v.variant: v.settings for v in spec.variants}
    target = graph.target.name
    params = {"name": spec.name, "compare": spec.block("compare"), "variants": settings, "target": target, "code": CODE_VERSION}
    doc = f"the variants of {spec.name} side by side -> results/{spec.name}/{target}/summary.csv, summary.png, best.json"
    return ModelGraph(graph, spec).stage("compare", params, action, doc, deps=benches, published=output_files(spec.name, target))
