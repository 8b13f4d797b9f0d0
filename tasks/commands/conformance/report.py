"""``results/conformance/report.json`` and ``report.md``: pass/fail per model and check, tools, GPU, timings.

A run replaces the entries of the models it checked and keeps the others: the LLMs and the
encoders run in two images (``trtllm`` and ``plan``), and one report covers both halves.  Each
model's entry carries the toolchain and time of the run that checked it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.core import fsops

CHECKS = ("build-cpu", "build-trt", "answers", "converter")
CRITERIA = {
    "answers (llm)": "greedy text of the ensemble equal on trt and cpu (fp32 checkpoints and engines)",
    "answers (encoder)": "embedding cosine >= 0.999 between the trt fp16 plan and the cpu ONNX model",
    "converter": "NVIDIA's convert_checkpoint.py and ours: same tensor names, shapes and values (fp32)",
}


def check(*, ok: bool, seconds: float, detail: str, **data: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON values
    return {"status": "pass" if ok else "fail", "seconds": round(seconds, 2), "detail": detail, **data}


def failures(models: dict[str, Any]) -> list[str]:
    """One line per failed check: ``<model>: <check>: <why>``."""
    return [
        f"{name}: {check_name}: {result['detail']}"
        for name, entry in sorted(models.items())
        for check_name, result in entry["checks"].items()
        if result["status"] != "pass"
    ]


def merged(previous: Any, models: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN401 - whatever the old file held
    kept = previous.get("models", {}) if isinstance(previous, dict) else {}
    everything = {**{k: v for k, v in kept.items() if isinstance(v, dict) and "checks" in v}, **models}
    lines = failures(everything)
    return {"status": "fail" if lines else "pass", "criteria": CRITERIA, "models": everything, "failures": lines}


def write(folder: Path, models: dict[str, Any]) -> dict[str, Any]:
    """Merge this run's ``models`` into the report in ``folder``; returns the whole report."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = fsops.read_json(folder / "report.json") if (folder / "report.json").is_file() else None
    report = merged(previous, models)
    fsops.write_json_atomic(folder / "report.json", report)
    tmp = fsops.tmp_sibling(folder / "report.md")
    tmp.write_text(markdown(report), encoding="utf-8")
    tmp.replace(folder / "report.md")
    return report


def markdown(report: dict[str, Any]) -> str:
    models: dict[str, Any] = report["models"]
    lines = [f"# Conformance: trt against cpu — {report['status'].upper()}", ""]
    lines += [f"- {name}: {text}" for name, text in report["criteria"].items()]
    lines += ["", "| model | family | " + " | ".join(CHECKS) + " | seconds | checked |", "|---" * (len(CHECKS) + 4) + "|"]
    for name, entry in sorted(models.items()):
        cells = [entry["checks"].get(c, {}).get("status", "-") for c in CHECKS]
        lines.append(f"| {name} | {entry['family']} | " + " | ".join(cells) + f" | {entry['seconds']:.1f} | {entry['finished']} |")
    lines += ["", "## Toolchain", "", "| models | " + " | ".join(_toolchain_keys(models)) + " |"]
    lines.append("|---" * (len(_toolchain_keys(models)) + 1) + "|")
    for names, toolchain in _toolchains(models):
        lines.append(f"| {', '.join(names)} | " + " | ".join(str(toolchain.get(k, "-")) for k in _toolchain_keys(models)) + " |")
    lines += ["", "## Failures", ""] + ([f"- {line}" for line in report["failures"]] or ["none"])
    lines += ["", "## Answers", ""]
    for name, entry in sorted(models.items()):
        lines += _answers(name, entry["checks"].get("answers", {}))
    return "\n".join(lines) + "\n"


def _toolchain_keys(models: dict[str, Any]) -> list[str]:
    return sorted({k for entry in models.values() for k in entry.get("toolchain", {})})


def _toolchains(models: dict[str, Any]) -> list[tuple[list[str], dict[str, Any]]]:
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for name, entry in sorted(models.items()):
        toolchain = entry.get("toolchain", {})
        groups.setdefault(json.dumps(toolchain, sort_keys=True), ([], toolchain))[0].append(name)
    return list(groups.values())


def _answers(name: str, answers: dict[str, Any]) -> list[str]:
    items = answers.get("items", [])
    if not items:
        return [f"- {name}: {answers.get('detail', 'not run')}"]
    rows = [f"### {name}", "", "| request | cpu | trt | ok |", "|---|---|---|---|"]
    for item in items:
        if "cosine" in item:
            rows.append(f"| {_cell(item['request'])} | {len(item['cpu'])} floats | cosine {item['cosine']:.6f} | {item['ok']} |")
        else:
            rows.append(f"| {_cell(item['request'])} | {_cell(item['cpu'])} | {_cell(item['trt'])} | {item['ok']} |")
    return [*rows, ""]


def _cell(value: object) -> str:
    text = str(value)
    text = text[:23] + "…" if text.startswith("sha256:") else text
    return text.replace("|", "\\|").replace("\n", " ")
