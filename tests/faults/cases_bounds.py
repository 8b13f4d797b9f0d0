"""Every number a model file holds, out of bounds: zero, negative, huge, float, bool, string; and sweeps too large."""

from __future__ import annotations

from tests.faults.cases import BAD_YAML, Case, block_value, yaml_case

BOUNDS = "bounds"
SWEEP = "sweep"

HUGE = "1000000000000"
# (block, key, the lowest valid value): each key gets a huge value, 1e20 and one more bad value in turn.
NUMERIC_KEYS = [
    ("engine", "max_batch_size", 1),
    ("engine", "max_seq_len", 1),
    ("engine", "opt_batch_size", 1),
    ("engine", "opt_seq_len", 1),
    ("engine", "workspace_mb", 1),
    ("triton", "max_batch_size", 1),
    ("triton", "instance_count", 1),
    ("triton", "max_queue_delay_us", 0),
    ("export", "opset", 17),
    ("bench", "measurement_interval_ms", 50),
    ("bench", "stability_percentage", 0),
    ("bench", "max_trials", 3),
    ("bench", "warmup_requests", 0),
    ("bench", "request_timeout_s", 1),
    ("bench", "num_prompts", 1),
    ("bench", "input_tokens", 1),
    ("bench", "seed", 0),
    ("bench", "batch_size", 1),
]
# The third value rotates so every kind of wrong number meets several keys.
THIRD = [("zero", "0"), ("negative", "-3"), ("float", "2.5"), ("bool", "true"), ("string", "'eight'"), ("null", "null")]


def third(index: int, low: int) -> tuple[str, str]:
    label, value = THIRD[index % len(THIRD)]
    # Zero is valid where the lowest value is zero; those keys get a negative number instead.
    return ("negative", "-1") if label == "zero" and low == 0 else (label, value)


def bound_cases() -> list[Case]:
    cases = []
    for index, (block, key, low) in enumerate(NUMERIC_KEYS):
        dotted = f"{block}.{key}"
        label, value = third(index, low)
        for tag, written in (("huge", HUGE), ("1e20", "1e20"), (label, value)):
            text = block_value(block, key, written)
            cases.append(yaml_case(f"{block}-{key}-{tag}".replace("_", "-"), BOUNDS, f"{dotted}: {written}", text, dotted))
    return cases


def sweep(lines: str) -> str:
    return BAD_YAML + "sweep:\n" + lines


SWEEP_CASES = [
    yaml_case("sweep-257", SWEEP, "a sweep of 257 variants", sweep(f"  triton.instance_count: {list(range(1, 258))}\n"), "sweep"),
    yaml_case(
        "sweep-560k",
        SWEEP,
        "a sweep of 560,000 points",
        sweep(
            f"  triton.instance_count: {list(range(1, 101))}\n"
            f"  triton.max_queue_delay_us: {list(range(100))}\n"
            f"  engine.workspace_mb: {list(range(1, 57))}\n"
        ),
        "sweep",
        memory_mb=2048,
        timeout=60,
    ),
    yaml_case(
        "sweep-huge-value",
        SWEEP,
        "a swept instance count of 100000",
        sweep("  triton.instance_count: [1, 100000]\n"),
        "triton.instance_count",
    ),
    yaml_case(
        "sweep-not-list", SWEEP, "a sweep value that is not a list", sweep("  triton.instance_count: 4\n"), "sweep.triton.instance_count"
    ),
    yaml_case(
        "sweep-long-value",
        SWEEP,
        "a 5,000-character swept word",
        sweep(f"  engine.precision: [fp32, {'f' * 5000}]\n"),
        "engine.precision",
    ),
    yaml_case(
        "instance-count-100000",
        BOUNDS,
        "triton.instance_count: 100000",
        block_value("triton", "instance_count", "100000"),
        "triton.instance_count",
    ),
    yaml_case(
        "interval-2e9",
        BOUNDS,
        "bench.measurement_interval_ms: 2000000000",
        BAD_YAML + "bench:\n  measurement_interval_ms: 2000000000\n",
        "bench.measurement_interval_ms",
    ),
    yaml_case(
        "concurrency-huge", BOUNDS, "bench.concurrency: [100000000]", BAD_YAML + "bench:\n  concurrency: [100000000]\n", "bench.concurrency"
    ),
]

CASES = bound_cases() + SWEEP_CASES
