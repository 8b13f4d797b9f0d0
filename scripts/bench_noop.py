# ruff: noqa: T201, INP001 - a measurement script run by path: its printed lines are the report
"""No-op cost of the project's doit graph against bare doit on a graph of the same shape.

    python scripts/bench_noop.py 1 10 50 200 [--rounds 5] [--project PATH] [--keep DIR | --reuse DIR] [--profile]

For each N: a project (``--project``'s dodo.py, tasks/, docker/, pyproject.toml) with N encoder model
files that all point at ONE tiny random BERT checkpoint (built offline, as the tests build it), no
``bench:`` block, built once on target cpu; and a bare doit project of the same shape: the same tasks,
file_dep, task_dep and targets (mirrored files of the same sizes), no-op python actions, the same
sqlite3 backend and dep_file, doit's own md5 checker (the project's stat-cache checker is project code,
so its cost is part of the overhead being measured).  Then, A/B interleaved for ``--rounds``, medians:

- no-op ``doit build target=cpu`` vs bare ``doit build``;
- after a touch (mtime only) of every file that is some task's file_dep: the first and the second run;
- ``doit list``, ``doit list --all --status``, ``doit info repo:<first model>``.

Building N encoders for real costs ~40 s of ONNX export each on 2 cores.  The exports are
byte-identical (same checkpoint, same params) and their action keys differ only by the model's
path, so one export is built and the others are seeded into a folder artifact cache under the keys
``doit plan`` computes; ``doit build cache=<folder>`` then restores them and builds every other stage
(fetch, engine, config, repo) for real.  A checkout without ``doit plan`` is built plainly.

``--keep DIR`` keeps DIR/ckpt, DIR/p<N>/project, DIR/p<N>/bare; ``--reuse DIR`` takes the projects a
``--keep DIR`` run left (refreshing their code from ``--project`` and settling them with one untimed
build), so another checkout is measured on the same built project in seconds:

    python scripts/bench_noop.py 200 --reuse /work/tools/noop --project /path/to/other/checkout
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.commands.conformance.fixtures import build_tiny_bert  # noqa: E402
from tests.helpers import TINY_YAML  # noqa: E402

CODE = ("dodo.py", "tasks", "docker", "pyproject.toml")
BUILT = "built.json"  # written last into DIR/p<N>: that project and its bare twin are complete
# Run in the project (cwd) by the venv's python: its tasks with their file_dep, task_dep, targets.
DUMP = """
import json, sys
from doit import doit_cmd, loader
doit_cmd.reset_vars()
for arg in sys.argv[1:]:
    doit_cmd.set_var(*arg.split("=", 1))
sys.argv = ["doit", "list"]
namespace = dict(vars(loader.get_module("dodo.py", cwd=".")))
tasks = loader.load_tasks(namespace, allow_delayed=False)
print(json.dumps({"default_tasks": loader.load_doit_config(namespace).get("default_tasks"), "tasks": [
    {"name": t.name, "file_dep": sorted(t.file_dep), "task_dep": list(t.task_dep), "targets": list(t.targets),
     "actions": bool(t.actions), "group": t.has_subtask} for t in tasks]}))
"""
BARE_DODO = '''"""Bare doit: the measured project's tasks, file_dep, task_dep and targets with no-op actions."""

import json
from pathlib import Path

DOIT_CONFIG = {{"backend": "sqlite3", "dep_file": "build/.doit.db", "default_tasks": {default!r}}}
SPEC = json.loads(Path("tasks.json").read_text(encoding="utf-8"))


def noop():
    return None


def as_dict(task):
    return {{"actions": [(noop,)] if task["actions"] else [], "file_dep": task["file_dep"], "task_dep": task["task_dep"],
             "targets": task["targets"]}}


def creator(basename, tasks):
    if basename in SPEC["groups"]:
        def create():
            for task in tasks:
                yield {{"name": task["name"].split(":", 1)[1], **as_dict(task)}}
    else:
        def create():
            return as_dict(tasks[0])
    create.__doc__ = basename
    return create


for _basename, _tasks in SPEC["tasks"].items():
    globals()["task_" + _basename] = creator(_basename, _tasks)
'''


def doit(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", *args]


def env() -> dict[str, str]:
    # Bytecode is written as in a real checkout: a no-op must not pay for compiling tasks/ each run.
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(argv: Sequence[str], cwd: Path, timeout: float = 7200) -> float:
    """Seconds one command took; a failure stops the measurement with its output."""
    started = time.monotonic()
    done = subprocess.run(list(argv), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {cwd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def model_files(n: int, checkpoint: Path) -> dict[str, str]:
    names = [f"m{i:03d}" for i in range(n)]
    return {name: TINY_YAML.replace("name: tiny", f"name: {name}").format(path=checkpoint) for name in names}


def copy_code(project: Path, dest: Path) -> None:
    """The measured checkout's code into ``dest`` (replacing what an earlier run put there)."""
    for name in CODE:
        src, out = project / name, dest / name
        if out.is_dir():
            shutil.rmtree(out)
        if src.is_dir():
            shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, out)


def task_spec(project: Path) -> dict[str, Any]:
    """``{"default_tasks": [...], "tasks": [{name, file_dep, task_dep, targets, actions, group}]}`` of a project on target cpu."""
    done = subprocess.run([sys.executable, "-c", DUMP, "target=cpu"], cwd=project, env=env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"loading {project}/dodo.py failed:\n{done.stderr[-3000:]}")
    spec: dict[str, Any] = json.loads(done.stdout)
    return spec


def mirrored(path: str) -> str:
    """Where the bare project keeps its copy of a file the project names (relative, or absolute outside it)."""
    return f"external{path}" if Path(path).is_absolute() else path


def bare_spec(tasks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """tasks.json of the bare project: tasks by basename (sub-tasks of groups in order), paths mirrored."""
    tasks = list(tasks)
    by_base: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        base = task["name"].split(":", 1)[0]
        if task["group"]:
            by_base.setdefault(base, [])  # the group itself: doit makes it from the sub-tasks
            continue
        paths = {key: [mirrored(p) for p in task[key]] for key in ("file_dep", "targets")}
        by_base.setdefault(base, []).append({**task, **paths})
    return {"groups": sorted(t["name"] for t in tasks if t["group"]), "tasks": by_base}


def write_bare(loaded: dict[str, Any], project: Path, dest: Path) -> dict[str, Any]:
    """A bare doit project in ``dest`` shaped like ``loaded`` (``task_spec(project)``): every file copied, dirs made."""
    tasks = loaded["tasks"]
    spec = bare_spec(tasks)
    dest.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        for path in [*task["file_dep"], *task["targets"]]:
            src, out = project / path, dest / mirrored(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                out.mkdir(exist_ok=True)
            elif src.is_file() and not out.exists():
                shutil.copy2(src, out)
    (dest / "tasks.json").write_text(json.dumps(spec), encoding="utf-8")
    (dest / "dodo.py").write_text(BARE_DODO.format(default=loaded["default_tasks"]), encoding="utf-8")
    return spec


def seed_exports(project: Path, cache: Path) -> bool:
    """Entries for every model's export under its planned key, copied from the one built export."""
    plan = project / "build" / "plan.json"
    try:
        run(doit("plan", "target=cpu", f"cache={cache}", f"json={plan}"), project)
    except SystemExit:
        return False  # a checkout without ``doit plan``: build everything for real
    stages = [s for p in json.loads(plan.read_text(encoding="utf-8"))["plans"] for s in p["stages"]]
    keys = {s["task"].split(":", 1)[1]: s["key"] for s in stages if s["task"].startswith("export:") and s["key"]}
    first = next((m for m in sorted(keys) if (cache / "ac" / keys[m]).is_file()), None)
    if first is None:
        return False
    entry = (cache / "ac" / keys[first]).read_text(encoding="utf-8")
    for model, key in keys.items():
        target = cache / "ac" / key
        if not target.exists():
            target.write_text(entry.replace(keys[first], key).replace(first, model), encoding="utf-8")
    return True


def build(project: Path, cache: Path, models: list[str]) -> None:
    cached = (f"cache={cache}", "cache_mode=rw")
    run(doit(f"build:{models[0]}", "target=cpu", *cached), project)
    if len(models) > 1:
        run(doit("-n", "2", "fetch", "target=cpu"), project)
        seed_exports(project, cache)
        # Serial: parallel restores race on each other's staging folders (build/<m>/..export.tmp-*) in the cache's
        # scan for local blobs, and one of them fails with FileNotFoundError.
        run(doit("build", "target=cpu", *cached), project)


def prepare(n: int, args: argparse.Namespace, base: Path, checkpoint: Path) -> tuple[Path, Path, str]:
    """The built project and bare twin for N models (made, or reused from ``--reuse``), and the info task."""
    folder = base / f"p{n}"
    project, bare = folder / "project", folder / "bare"
    models = sorted(model_files(n, checkpoint))
    if args.reuse and (folder / BUILT).is_file():
        copy_code(args.project, project)
        run(doit("build", "target=cpu", f"cache={base / 'cache'}", "cache_mode=rw"), project)
        shutil.rmtree(bare)
    else:
        if folder.exists():
            shutil.rmtree(folder)
        (project / "models").mkdir(parents=True)
        copy_code(args.project, project)
        for name, text in model_files(n, checkpoint).items():
            (project / "models" / f"{name}.yaml").write_text(text, encoding="utf-8")
        started = time.monotonic()
        build(project, base / "cache", models)
        seconds = time.monotonic() - started
        print(f"built {n} models in {seconds:.0f} s", flush=True)
        (folder / BUILT).write_text(json.dumps({"models": n, "build_seconds": round(seconds, 1)}), encoding="utf-8")
    write_bare(task_spec(project), project, bare)
    run(doit("build"), bare)  # the bare DB gets its first state; later runs are no-ops
    return project, bare, f"repo:{models[0]}"


def touch_inputs(root: Path, *, bare: bool) -> None:
    """A new mtime, same bytes, on every file some task of ``root`` has as file_dep."""
    if bare:
        spec = json.loads((root / "tasks.json").read_text(encoding="utf-8"))
        paths = {p for tasks in spec["tasks"].values() for t in tasks for p in t["file_dep"]}
    else:
        paths = {p for t in task_spec(root)["tasks"] for p in t["file_dep"]}
    later = time.time() + 1
    for path in paths:
        os.utime(root / path, (later, later))


COMMANDS = {
    "noop": (("build", "target=cpu"), ("build",)),
    "list": (("list", "target=cpu"), ("list",)),
    "status": (("list", "--all", "--status", "target=cpu"), ("list", "--all", "--status")),
}


def measure(project: Path, bare: Path, info_task: str, rounds: int) -> dict[str, float]:
    """Medians over ``rounds``; project and bare alternate which goes first."""
    samples: dict[str, list[float]] = {}
    commands = {**COMMANDS, "info": (("info", info_task, "target=cpu"), ("info", info_task))}
    for round_ in range(rounds + 1):  # round 0 warms file caches and bytecode, and is not counted
        sides = [("p", project, 0), ("b", bare, 1)]
        for side, root, index in sides if round_ % 2 else sides[::-1]:
            for name, argv in commands.items():
                seconds = run(doit(*argv[index]), root)
                samples.setdefault(f"{side}_{name}", []).append(seconds)
            touch_inputs(root, bare=side == "b")
            for run_name in ("touch1", "touch2"):
                samples.setdefault(f"{side}_{run_name}", []).append(run(doit(*commands["noop"][index]), root))
    return {key: statistics.median(values[1:]) for key, values in samples.items()}


def table(rows: list[tuple[int, dict[str, float]]]) -> str:
    def cell(m: dict[str, float], name: str) -> str:
        return f"{m['p_' + name]:.2f} s ({m['p_' + name] / m['b_' + name]:.1f}x)"

    lines = [
        "| models | project no-op | bare doit | ratio | after-touch 1st | after-touch 2nd | list | list --all --status | info |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, m in rows:
        ratio = m["p_noop"] / m["b_noop"]
        lines.append(
            f"| {n} | {m['p_noop']:.2f} s | {m['b_noop']:.2f} s | {ratio:.1f}x | {cell(m, 'touch1')} | {cell(m, 'touch2')} "
            f"| {cell(m, 'list')} | {cell(m, 'status')} | {cell(m, 'info')} |"
        )
    return "\n".join(lines)


def profile(project: Path, top: int = 10) -> None:
    """One no-op build under cProfile: the top functions by cumulative and by own time."""
    import pstats  # noqa: PLC0415 - only this option needs it

    out = project / "build" / "noop.prof"
    run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "doit", "build", "target=cpu"], project)
    for key in ("cumulative", "tottime"):
        print(f"\nno-op doit build, {project.parent.name}: top {top} by {key}")
        pstats.Stats(str(out), stream=sys.stdout).sort_stats(key).print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=int, nargs="+", metavar="N")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--project", type=Path, default=ROOT, help="the checkout whose code is measured")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--keep", type=Path, help="keep the generated projects in this folder (replacing earlier ones)")
    where.add_argument("--reuse", type=Path, help="like --keep, but take the built projects an earlier run left there")
    parser.add_argument("--profile", action="store_true", help="profile one no-op build at the largest N")
    args = parser.parse_args()
    args.project = args.project.resolve()
    kept = args.keep or args.reuse
    with tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp:
        base = (kept or Path(tmp)).resolve()
        base.mkdir(parents=True, exist_ok=True)
        checkpoint = base / "ckpt"
        if not (checkpoint / "model.safetensors").is_file():
            build_tiny_bert(checkpoint)
        rows = []
        for n in args.models:
            project, bare, info_task = prepare(n, args, base, checkpoint)
            rows.append((n, measure(project, bare, info_task, args.rounds)))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        print(f"\n{args.project} ({args.rounds} rounds, medians)\n")
        print(table(rows))
        if args.profile:
            profile(base / f"p{max(args.models)}" / "project")


if __name__ == "__main__":
    main()
