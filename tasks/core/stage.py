"""The one generic stage -> doit task function, and the runner every stage action goes through.

A stage is data: upstream stages and raw files whose content matters, the params it
reads (YAML subtree + toolchain items + its code version), one output directory and
an action that fills a private work directory.  ``to_task`` derives ``file_dep``,
``targets`` and ``uptodate`` from that; no stage writes them by hand.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks.core import cache, changes, diskfull, fsops, hashing, interrupts, lock, manifest
from tasks.core.changes import describe_changes
from tasks.core.errors import UserError
from tasks.core.inputnames import input_names

log = logging.getLogger("tasks")

Params = Mapping[str, Any]


@dataclass
class StageContext:
    """What an action sees: its inputs, its params and the work dir it must fill."""

    stage: Stage
    out: Path
    inputs: dict[str, Path]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> Params:
        return self.stage.params

    def log_path(self, name: str) -> Path:
        """Where a tool's full output goes: ``build/<model>/logs/<name>.log``."""
        path = self.stage.log_dir / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


Action = Callable[[StageContext], None]


@dataclass(frozen=True)
class Stage:
    """One node of the graph; ``name`` is the doit basename, ``model`` the sub-task name."""

    name: str
    model: str
    params: Params
    out_dir: Path
    action: Action
    doc: str
    deps: Mapping[str, Stage] = field(default_factory=dict)
    files: Sequence[Path] = ()
    target: str = "any"
    meta_dir: Path | None = None
    log_dir: Path = Path("build/logs")
    # Files of the output also kept at a stable place outside build/ (results/<m>/...).
    published: Mapping[str, Path] = field(default_factory=dict)
    # A folder that serves the whole output as hardlinks (repos/<m>): one per model, whichever target built last.
    served: Path | None = None
    # The model file the params come from, named when the stage fails.
    source: Path | None = None
    # Shared through the artifact cache (tasks/core/cache.py) when one is configured.
    cached: bool = False
    # The running machine's toolchain, compared with params["toolchain"] before an upload (trt stages).
    fingerprint: Callable[[], Mapping[str, Any]] | None = None
    # Named subsets of the output (fnmatch patterns, ``!`` excludes), each with a manifest of its own:
    # a stage that reads only some files depends on their part, not on the whole output.
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Set on a view of this stage given to a downstream stage as an input: the part it reads.
    part: str | None = None
    # Keys of the stage's YAML blocks this target does not read (with their values): shown by ``doit info``.
    unread: Mapping[str, Any] = field(default_factory=dict)
    # The params as saved and compared, made once with the graph (a reused graph snapshot keeps them).
    saved_params: Any = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "saved_params", canonical(self.params))

    @property
    def task_name(self) -> str:
        return f"{self.name}:{self.model}"

    @property
    def meta(self) -> Path:
        return self.meta_dir or self.out_dir

    @cached_property
    def manifest_path(self) -> Path:
        return self.meta / (manifest.MANIFEST if self.part is None else manifest.part_name(self.part))

    @cached_property
    def doit_files(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Doit's ``file_dep`` and ``targets``, made once (a graph snapshot keeps them)."""
        deps = tuple(p.as_posix() for p in input_paths(self))
        targets = (
            self.manifest_path.as_posix(),
            *((self.meta / manifest.part_name(p)).as_posix() for p in self.parts),
            *(p.as_posix() for p in self.published.values()),
        )
        return deps, targets

    def only(self, part: str) -> Stage:
        """A view of the stage for an input that depends on one part of its output."""
        if part not in self.parts:
            raise KeyError(f"{self.task_name} has no part {part!r}")
        return replace(self, part=part)

    @property
    def whole(self) -> Stage:
        return replace(self, part=None)


def canonical(value: Any) -> Any:  # noqa: ANN401 - any JSON value
    """JSON round trip: tuples become lists, keys sorted, so equal params compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))


def rebuild_source(stage: Stage) -> str:
    """Where an outdated stage's output would come from; only ``doit info`` asks (a build never does)."""
    if not stage.cached:
        return "would build (not a cached stage)"
    try:
        key = action_key(stage, input_digests(stage))
    except OSError:
        return "would build (an input is not built yet)"
    return cache.source_of(key)


# doit looks up an uptodate callable's signature on every check (for its task/values arguments);
# a declared one is found at once, where inspecting a callable object costs more than the check.
_TASK_VALUES = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("task", "values")])


class ParamsCheck:
    """doit ``uptodate`` entry: the params this stage reads are the ones of its last run on this target.

    doit keeps one set of values per task name, and ``engine:<m>`` is one task on both targets:
    the params are saved per target (the other target's entry carried over), so switching
    target and back finds the first target's params again.
    """

    __signature__ = _TASK_VALUES

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.params = stage.saved_params
        self.changes: list[str] = []

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:  # noqa: ANN401 - doit Task
        saved = values.get(SAVED_PARAMS)
        by_target = dict(saved) if isinstance(saved, dict) else {}
        task.value_savers.append(lambda: {SAVED_PARAMS: by_target | {self.stage.target: self.params}})
        old = by_target.get(self.stage.target)
        if old == self.params:
            return True
        self.changes = ["never built"] if old is None else describe_changes(old, self.params)
        return False

    def __str__(self) -> str:
        return f"params changed (target {self.stage.target}): {'; '.join(self.changes)}; {rebuild_source(self.stage)}"


# The doit value holding a stage's params per target: {target: params}.
SAVED_PARAMS = "params_by_target"


class OutputCheck:
    """doit ``uptodate`` entry: the published output still matches its manifest."""

    __signature__ = inspect.Signature()

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.reason = ""

    def __call__(self) -> bool:
        problem = output_problem(self.stage)
        self.reason = problem or ""
        return problem is None

    def __str__(self) -> str:
        return f"output of {self.stage.task_name} is not intact: {self.reason}; {rebuild_source(self.stage)}"


def output_problem(stage: Stage) -> str | None:
    """Why the published output (and its copies outside build/) no longer matches the manifest."""
    content = manifest.load(stage.meta)
    problem = manifest.verify(content, stage.out_dir)
    if problem is not None or content is None:
        return problem
    for rel, dest in stage.published.items():
        entry = content.files.get(rel)
        problem = f"{dest} was modified" if entry is None else manifest.file_problem(dest, entry)
        if problem is not None:
            return problem
    return None if stage.served is None else manifest.verify(content, stage.served)


def input_paths(stage: Stage) -> list[Path]:
    """The files whose content this stage depends on: upstream manifests, then raw files."""
    return [dep.manifest_path for dep in stage.deps.values()] + list(stage.files)


def input_digests(stage: Stage) -> dict[str, str]:
    paths = input_paths(stage)
    return {name: hashing.digest(p) for name, p in zip(input_names(paths), paths, strict=True)}


def action_key(stage: Stage, inputs: Mapping[str, str]) -> str:
    """Bazel-style key: params plus the content digest of every input file."""
    blob = json.dumps({"params": stage.saved_params, "inputs": dict(inputs)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def to_task(stage: Stage) -> dict[str, Any]:
    """The doit task dict of a stage (sub-task ``stage.model`` of basename ``stage.name``)."""
    return {
        "name": stage.model,
        "doc": stage.doc,
        "actions": [(run_stage, [stage])],
        "file_dep": list(stage.doit_files[0]),
        "targets": list(stage.doit_files[1]),
        "uptodate": [ParamsCheck(stage), OutputCheck(stage)],
        "verbosity": 2,
        **({"meta": {f"not read by target {stage.target}": unread_keys(stage)}} if stage.unread else {}),
    }


def unread_keys(stage: Stage) -> list[str]:
    """``engine.precision: fp16`` for each key of the model file this stage ignores on its target."""
    return [f"{key}: {json.dumps(value)}" for key, value in sorted(changes.flatten(canonical(stage.unread)).items())]


def run_stage(stage: Stage) -> TaskFailed | None:
    """Doit action: build the stage unless its published output already matches the key."""
    try:
        lock.hold()
        interrupts.raise_if_interrupted()
        _build(stage)
    except UserError as exc:
        record = fsops.read_json(stage.meta / manifest.RECORD)
        # On the first line, before a tool's log tail: the line a user (and CI's summary) reads first.
        first, newline, rest = str(exc).partition("\n")
        return TaskFailed(f"{first}{changes.since_last_good(stage.source, record, stage.saved_params, stage.target)}{newline}{rest}")
    except Exception as exc:
        full = diskfull.disk_full(exc)
        if full is None:
            raise
        return TaskFailed(f"{stage.task_name}: {diskfull.message(full.filename, stage.out_dir)}")
    return None


def _reusable(stage: Stage, key: str) -> bool:
    record = fsops.read_json(stage.meta / manifest.RECORD)
    if not isinstance(record, dict) or record.get("key") != key:
        return False
    return manifest.verify(manifest.load(stage.meta), stage.out_dir) is None


def _copy_published(stage: Stage) -> None:
    # Copies, not hardlinks: a results file opened and edited in place must not alter build/.
    for rel, dest in stage.published.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.copyfile(stage.out_dir / rel, tmp)
        tmp.replace(dest)


def _serve(stage: Stage) -> None:
    """Swap the served folder to this output's tree (artifacts hardlinked read-only, the rest copied) unless it holds it."""
    content = manifest.load(stage.meta)
    if stage.served is None or manifest.verify(content, stage.served) is None:
        return
    work = fsops.tmp_sibling(stage.served)
    try:
        fsops.link_tree(stage.out_dir, work, skip=manifest.META)
        old = fsops.swap_in(work, stage.served)
        if old is not None:
            fsops.remove_tree(old)
    finally:
        if work.exists():
            fsops.remove_tree(work)
    log.info("%s: %s now serves the target %s build", stage.task_name, stage.served, stage.target)


def _build(stage: Stage) -> None:
    # Input digests are taken before the action and checked after it: an input edited
    # while the stage runs must not be recorded as the one it was built from.
    inputs = input_digests(stage)
    key = action_key(stage, inputs)
    with interrupts.uninterrupted():
        # Before the reuse check: a run killed between a swap and the old tree's removal left one.
        fsops.remove_stale_tmp(stage.out_dir)
        if stage.served is not None:
            fsops.remove_stale_tmp(stage.served)
    if _reusable(stage, key):
        log.info("%s: output already built with these inputs and params; reused", stage.task_name)
        with interrupts.uninterrupted():
            manifest.write_parts(stage.meta, stage.parts)
            _copy_published(stage)
            _serve(stage)
        return
    work = fsops.tmp_sibling(stage.out_dir)
    started = time.monotonic()
    try:
        with interrupts.uninterrupted():
            fsops.remove_tree(work)
            work.mkdir(parents=True)
        ctx = StageContext(stage, work, {role: dep.out_dir for role, dep in stage.deps.items()})
        restored = cache.restore(stage, key, work)
        if restored is None:
            _run_action(stage, ctx, inputs)
            restored = cache.upload(stage, key, work, ctx.record)
        if restored is not None:
            ctx.record = restored
        with interrupts.uninterrupted():
            _publish(stage, ctx, {"key": key, "inputs": inputs, "seconds": round(time.monotonic() - started, 3)})
    finally:
        with interrupts.uninterrupted():
            fsops.remove_tree(work)


def _run_action(stage: Stage, ctx: StageContext, inputs: Mapping[str, str]) -> None:
    stage.action(ctx)
    interrupts.raise_if_interrupted()
    if input_digests(stage) != inputs:
        raise UserError(stage.task_name, "an input changed while this stage ran; run doit again")


def _reuse_identical(work: Path, files: dict[str, tuple[int, str]], stage: Stage) -> None:
    """Point byte-identical files at the previous output's inodes.

    Hardlinks elsewhere (the Triton repository) keep sharing one copy on disk, and
    the digest cache, keyed by inode, needs no re-hash.  Only an output of the same code
    version is relinked: an older one may share its inodes with files the project does
    not own (fetch and repo once hardlinked a user's checkpoint).
    """
    old = manifest.load(stage.meta)
    record = fsops.read_json(stage.meta / manifest.RECORD)
    params = record.get("params") if isinstance(record, dict) else None
    if not isinstance(params, dict) or params.get("code") != stage.params.get("code"):
        return
    if old is None or manifest.verify(old, stage.out_dir) is not None:
        return
    for rel, entry in files.items():
        if old.files.get(rel) == entry:
            staged = work / f"{rel}.relink"
            fsops.link_or_copy(stage.out_dir / rel, staged)
            staged.replace(work / rel)


def _publish(stage: Stage, ctx: StageContext, facts: dict[str, Any]) -> None:
    files, dirs = manifest.scan(ctx.out)
    _reuse_identical(ctx.out, files, stage)
    content = manifest.Manifest(stage.name, stage.model, stage.target, files, dirs).to_json()
    record = {
        "task": stage.task_name,
        "params": stage.saved_params,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **facts,
        **ctx.record,
    }
    if stage.meta_dir is None:
        fsops.write_json_atomic(ctx.out / manifest.MANIFEST, content)
        fsops.write_json_atomic(ctx.out / manifest.RECORD, record)
        old = fsops.swap_in(ctx.out, stage.out_dir)
    else:
        (stage.meta / manifest.RECORD).unlink(missing_ok=True)
        old = fsops.swap_in(ctx.out, stage.out_dir)
        fsops.write_json_atomic(stage.manifest_path, content)
        fsops.write_json_atomic(stage.meta / manifest.RECORD, record)
    if old is not None:
        fsops.remove_tree(old)
    manifest.write_parts(stage.meta, stage.parts)
    _copy_published(stage)
    _serve(stage)
    how = "restored from the cache" if "from_cache" in record else "built"
    log.info("%s: %s in %.1f s (%d files)", stage.task_name, how, facts["seconds"], len(files))
