"""perf_analyzer's and genai-perf's CSV output read into the project's metric rows."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from tasks.bench import metrics
from tasks.bench.perfrun import WHERE
from tasks.core.errors import UserError

# genai-perf's stats table: "Metric,avg,min,max,p99,...", its scalar table: "Metric,Value".
_METRIC = "Metric"
_VALUE = "Value"
_MISSING = ("", "N/A")


# -------------------------------------------------------------------------- parsing


def _number(cell: str | None, what: str) -> float | None:
    text = (cell or "").strip().replace(",", "")
    if text in _MISSING:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(WHERE, f"unexpected value {cell!r} for {what} in the tool's CSV") from None


def _csv_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text))]


def _pa_row(header: list[str], cells: list[str]) -> metrics.Row:
    by_name = dict(zip(header, cells, strict=False))
    return {column: _number(by_name.get(column), column) for column in metrics.PA_COLUMNS}


def parse_perf_analyzer_csv(text: str) -> list[metrics.Row]:
    """perf_analyzer's ``-f`` CSV as rows keyed by :data:`metrics.PA_COLUMNS`, sorted by concurrency.

    Columns the header lacks (no server statistics, no ``--verbose-csv``) are None; columns we do
    not use (``Response Throughput``, cache hits, GPU metrics) are ignored.
    """
    rows = [row for row in _csv_rows(text) if any(row)]
    if not rows:
        raise UserError(WHERE, "perf_analyzer wrote an empty CSV")
    header = rows[0]
    if header[0] == "Request Rate":
        raise UserError(WHERE, "perf_analyzer's CSV is from request-rate mode; only concurrency mode is supported")
    if header[0] != metrics.CONCURRENCY:
        raise UserError(WHERE, f"perf_analyzer's CSV starts with {header[0]!r}, expected {metrics.CONCURRENCY!r}")
    parsed = [_pa_row(header, cells) for cells in rows[1:]]
    # perf_analyzer orders rows by throughput.
    return sorted(parsed, key=lambda row: row[metrics.CONCURRENCY] or 0.0)


@dataclass(frozen=True)
class _GenaiTables:
    stats: dict[str, dict[str, str]]
    values: dict[str, str]

    def stat(self, metric: str, stat: str) -> float | None:
        return _number(self.stats.get(metric, {}).get(stat), f"{metric} {stat}")

    def value(self, metric: str) -> float | None:
        return _number(self.values.get(metric), metric)


def _genai_tables(text: str) -> _GenaiTables:
    stats: dict[str, dict[str, str]] = {}
    values: dict[str, str] = {}
    header: list[str] = []
    for row in _csv_rows(text):
        if not any(row):
            header = []
        elif row[0] == _METRIC:
            header = row
        elif header[1:2] == [_VALUE]:
            values[row[0]] = row[1] if len(row) > 1 else ""
        elif header:
            stats[row[0]] = dict(zip(header[1:], row[1:], strict=False))
    if not stats and not values:
        raise UserError(WHERE, "genai-perf's CSV holds no 'Metric' table")
    return _GenaiTables(stats, values)


def _pa_columns_from_genai(tables: _GenaiTables) -> metrics.Row:
    row: metrics.Row = dict.fromkeys(metrics.PA_COLUMNS)
    row[metrics.THROUGHPUT] = tables.value(metrics.REQUEST_THROUGHPUT)
    latency = {stat: tables.stat(metrics.REQUEST_LATENCY, stat) for stat in ("avg", *(f"p{p}" for p in metrics.PERCENTILES))}
    row[metrics.AVG_LATENCY] = _ms_to_us(latency["avg"])
    for p in metrics.PERCENTILES:
        row[metrics.percentile_column(p)] = _ms_to_us(latency[f"p{p}"])
    return row


def _ms_to_us(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def parse_genai_perf_csv(text: str) -> metrics.Row:
    """genai-perf's ``*_genai_perf.csv`` as a row with every column of ``metrics.columns(llm=True)``.

    The LLM columns come straight from the tables; of perf_analyzer's columns, throughput is the
    request throughput and the latencies are the request latencies in microseconds.  Concurrency,
    client send/recv and the server columns are not in the file and stay None.
    """
    tables = _genai_tables(text)
    row = _pa_columns_from_genai(tables)
    for metric in metrics.LLM_DISTRIBUTIONS:
        for stat in metrics.LLM_STATS:
            row[metrics.llm_column(metric, stat)] = tables.stat(metric, stat)
    row[metrics.OUTPUT_TOKEN_THROUGHPUT] = tables.value(metrics.OUTPUT_TOKEN_THROUGHPUT)
    row[metrics.REQUEST_THROUGHPUT] = tables.value(metrics.REQUEST_THROUGHPUT)
    if all(value is None for value in row.values()):
        raise UserError(WHERE, "genai-perf's CSV has none of the expected metrics (request latency, throughput)")
    return row
