"""parity: a filled LLM model config checked against NVIDIA's inflight-batcher templates of the pinned version.

The table (``flagtables/inflight-batcher-1.2.1.json``, written once by ``scripts/parity_table.py`` from
verbatim copies of the templates) holds, per model, the ``parameters`` keys the backend or NVIDIA's
python model reads with no guard, and every tensor.  Its ``not_offered`` section is the project's own:
each tensor of the table that the project's configs leave out, with why.  ``problems`` lists every
disagreement between one filled config and the table, so a test can show them all at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parents[1] / "tools" / "flagtables" / "inflight-batcher-1.2.1.json"
DIRECTIONS = ("inputs", "outputs")


@cache
def table() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(TABLE.read_text(encoding="utf-8"))
    return result


def _data_type(row: Mapping[str, Any]) -> str:
    # A placeholder type (${logits_datatype}) is compared with what it is filled with.
    return str(row.get("resolves_to", row["data_type"]))


def _declared(config: Any, direction: str) -> list[Any]:  # noqa: ANN401 - generated protobuf class
    return list(config.input if direction == "inputs" else config.output)


def _tensor_problems(model: str, direction: str, declared: Any, row: Mapping[str, Any]) -> list[str]:  # noqa: ANN401
    from tritonclient.grpc import model_config_pb2  # noqa: PLC0415 - see config.parse

    where = f"{model} {direction[:-1]} {declared.name}"
    ours: dict[str, object] = {"data_type": model_config_pb2.DataType.Name(declared.data_type), "dims": list(declared.dims)}
    theirs: dict[str, object] = {"data_type": _data_type(row), "dims": list(row["dims"])}
    if direction == "inputs":
        ours["optional"], theirs["optional"] = bool(declared.optional), bool(row["optional"])
    return [f"{where}: {key} is {ours[key]}, the table says {theirs[key]}" for key in ours if ours[key] != theirs[key]]


def parameter_problems(model: str, config: Any, spec: Mapping[str, Any]) -> list[str]:  # noqa: ANN401
    declared = {key: value.string_value for key, value in config.parameters.items()}
    keys = spec["parameters"]
    problems = [
        f"{model}: parameters has no {key!r} (read with no guard: {why})" for key, why in keys["required"].items() if key not in declared
    ]
    if keys["section_required"] and not declared:
        problems.append(f"{model}: no parameters section (the model indexes it directly)")
    for key, allowed in keys.get("allowed_values", {}).items():
        if key in declared and declared[key] not in allowed:
            problems.append(f"{model}: parameter {key!r} is {declared[key]!r}, expected one of {allowed}")
    return problems


def tensor_problems(model: str, config: Any, spec: Mapping[str, Any], not_offered: Mapping[str, Any]) -> list[str]:  # noqa: ANN401
    problems: list[str] = []
    for direction in DIRECTIONS:
        rows = {row["name"]: row for row in spec[direction]}
        left_out: Mapping[str, str] = not_offered.get(direction, {})
        declared = {t.name: t for t in _declared(config, direction)}
        for name, tensor in declared.items():
            if name not in rows:
                problems.append(f"{model} {direction[:-1]} {name}: not in the table")
                continue
            problems += _tensor_problems(model, direction, tensor, rows[name])
            if name in left_out:
                problems.append(f"{model} {direction[:-1]} {name}: declared, yet listed as not offered")
        for name in rows.keys() - declared.keys():
            if not str(left_out.get(name, "")).strip():
                problems.append(f"{model} {direction[:-1]} {name}: in the table, not declared, and no not-offered reason")
        problems += [
            f"{model} {direction[:-1]} {name}: listed as not offered but not in the table" for name in left_out.keys() - rows.keys()
        ]
    return problems


def problems(model: str, config: Any, reference: Mapping[str, Any] | None = None) -> list[str]:  # noqa: ANN401
    """Every way ``config`` (a parsed ModelConfig of ``model``) disagrees with the table; empty when it matches."""
    reference = reference if reference is not None else table()
    spec = reference["models"][model]
    return parameter_problems(model, config, spec) + tensor_problems(model, config, spec, reference["not_offered"].get(model, {}))
