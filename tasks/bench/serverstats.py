"""Server-side times per request from Triton's statistics extension, as perf_analyzer reports them.

Triton's counters are cumulative since the model loaded, so a measurement takes the
difference of two snapshots.  A request to an ensemble runs each of its composing models;
its queue and compute times are the sums of theirs (the ensemble itself only schedules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass

from tasks.bench.metrics import ServerTimes

Fields = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Counters:
    """One model's cumulative counters: successful requests and nanoseconds per phase."""

    success: int
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int

    def minus(self, other: Counters) -> Counters:
        return self._combine(other, -1)

    def plus(self, other: Counters) -> Counters:
        return self._combine(other, 1)

    def _combine(self, other: Counters, sign: int) -> Counters:
        return Counters(*(a + sign * b for a, b in zip(astuple(self), astuple(other), strict=True)))


Snapshot = Mapping[str, Counters]
_ZERO = Counters(0, 0, 0, 0, 0)


def snapshot_from_proto(response: object) -> dict[str, Counters]:
    """A ``ModelStatisticsResponse`` as name -> counters (versions of one model summed)."""
    out: dict[str, Counters] = {}
    for stats in getattr(response, "model_stats", ()):
        inf = stats.inference_stats
        counters = Counters(
            int(inf.success.count),
            int(inf.queue.ns),
            int(inf.compute_input.ns),
            int(inf.compute_infer.ns),
            int(inf.compute_output.ns),
        )
        out[stats.name] = out.get(stats.name, _ZERO).plus(counters)
    return out


def composing_models(model: str, steps: Mapping[str, Sequence[str]]) -> list[str]:
    """The models whose time a request to *model* spends: itself, or for an ensemble its steps (recursively).

    ``steps`` maps each ensemble's name to the model names of its scheduling steps.
    """
    if model not in steps:
        return [model]
    seen: list[str] = []
    for step in steps[model]:
        for name in composing_models(step, steps):
            if name not in seen:
                seen.append(name)
    return seen


def server_times(before: Snapshot, after: Snapshot, served: str, models: Sequence[str]) -> ServerTimes | None:
    """Average server time (µs) per request to *served* between two snapshots, summed over *models*.

    The divisor is the number of requests *served* completed, not each model's own count: a
    streamed request runs postprocessing once per token, and all of that is the request's cost.
    (Those steps overlap the generation, so on decoupled pipelines the sum can exceed the latency.)
    None when no request completed in between.
    """
    requests = after.get(served, _ZERO).success - before.get(served, _ZERO).success
    if requests <= 0:
        return None
    totals = dict.fromkeys(Fields, 0.0)
    divisor = 1000.0 * requests
    for name in models:
        delta = after.get(name, _ZERO).minus(before.get(name, _ZERO))
        totals["queue"] += delta.queue_ns / divisor
        totals["compute_input"] += delta.compute_input_ns / divisor
        totals["compute_infer"] += delta.compute_infer_ns / divisor
        totals["compute_output"] += delta.compute_output_ns / divisor
    return ServerTimes(totals["queue"], totals["compute_input"], totals["compute_infer"], totals["compute_output"])
