"""The conformance kit: tiny checkpoints built with the real trt tools and compared with the cpu target.

``doit conformance target=trt [models=all|llm|encoders|<m>,...] [trtllm_examples=<dir>]`` inside the
pinned image.  Per model: build it on both targets (doit child processes), serve each repository
(the image's tritonserver / the pytriton one), ask both the same questions and compare; for LLMs
also convert the checkpoint with NVIDIA's own script and compare tensors with ours.  Writes
``results/conformance/report.{json,md}``; every failed check is one line and fails the run.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks.commands.conformance import answers, crosscheck, project, report
from tasks.commands.conformance.project import Model
from tasks.core.errors import UserError
from tasks.triton import compat

log = logging.getLogger(__name__)

ROOT = Path("build/conformance")
RESULTS = Path("results/conformance")


@dataclass(frozen=True)
class Options:
    models: list[Model]
    examples: Path
    root: Path = ROOT
    results: Path = RESULTS


def action(target: str, models: str, examples: str | None) -> TaskFailed | None:
    if target != "trt":
        return TaskFailed(f"conformance: compares target trt with cpu: run it with target=trt inside the GPU image (target is {target})")
    try:
        options = Options(project.select(models), crosscheck.examples_dir(examples))
    except UserError as exc:
        return TaskFailed(str(exc))
    lines = run(options)
    for line in lines:
        print(f"conformance FAIL {line}", file=sys.stderr)  # noqa: T201 - the one-line-per-failure contract
    if lines:
        return TaskFailed(f"{len(lines)} conformance check(s) failed; see {options.results / 'report.md'}")
    return None


def run(options: Options) -> list[str]:
    """Check every model; write the report; return this run's failure lines."""
    toolchain = compat.running_toolchain()
    checkpoints = {m.name: project.checkpoint(options.root / "checkpoints", m) for m in options.models}
    for target in ("cpu", "trt"):
        project.write_models(options.root / target, options.models, checkpoints)
    entries = {m.name: check_model(options, m, checkpoints[m.name], toolchain) for m in options.models}
    report.write(options.results, entries)
    return report.failures(entries)


def check_model(options: Options, model: Model, hf: Path, toolchain: dict[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    builds = {t: project.build(options.root / t, model, t, _log(options, model, f"build-{t}")) for t in ("cpu", "trt")}
    checks = {f"build-{t}": report.check(ok=b.ok, seconds=b.seconds, detail=b.detail) for t, b in builds.items()}
    if all(b.ok for b in builds.values()):
        checks["answers"] = _answers(options, model)
    else:
        checks["answers"] = report.check(ok=False, seconds=0.0, detail="not asked: a build failed")
    if model.kind == "llm":
        checks["converter"] = _converter(options, model, hf)
    entry: dict[str, Any] = {"family": model.family, "kind": model.kind, "checks": checks, "toolchain": toolchain}
    entry["status"] = "pass" if all(c["status"] == "pass" for c in checks.values()) else "fail"
    entry["seconds"] = round(time.monotonic() - started, 2)
    entry["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    log.info("conformance %s: %s (%.1f s)", model.name, entry["status"], entry["seconds"])
    return entry


def _answers(options: Options, model: Model) -> dict[str, Any]:
    started = time.monotonic()
    got: dict[str, list[answers.Answer]] = {}
    for target in ("cpu", "trt"):
        try:
            got[target] = answers.ask(options.root / target / "repos" / model.name, target, _log(options, model, f"serve-{target}"), model)
        except Exception as exc:  # noqa: BLE001 - a server or client error (bad tensor, missing model) is a failed check
            detail = f"{target}: {_one_line(exc)}"
            return report.check(ok=False, seconds=time.monotonic() - started, detail=detail, cpu=got.get("cpu"))
        answers.record(options.root / "answers" / f"{target}.json", model, got[target])
    items, problems = answers.compare(model, got["cpu"], got["trt"])
    seconds = time.monotonic() - started
    served = answers.served_model(model)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return report.check(ok=False, seconds=seconds, detail=problems[0] + more, model=served, items=items)
    what = "texts equal" if model.kind == "llm" else f"cosine >= {answers.MIN_COSINE}"
    return report.check(ok=True, seconds=seconds, detail=f"{len(items)} requests, {what}", model=served, items=items)


def _log(options: Options, model: Model, what: str) -> Path:
    return options.root / "logs" / f"{model.name}-{what}.log"


def _converter(options: Options, model: Model, hf: Path) -> dict[str, Any]:
    out = options.root / "upstream" / model.name
    result = crosscheck.run(
        options.examples, model, hf=hf, ours=options.root / "trt/build" / model.name / "convert", out=out,
        log=_log(options, model, "convert-upstream"),
    )  # fmt: skip
    return report.check(ok=result.ok, seconds=result.seconds, detail=result.detail, **result.data)


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}"
