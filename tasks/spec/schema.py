"""Model files: ``models/<name>.yaml`` parsed, checked and completed with defaults; rules across model files.

Every key is either understood or an error; nothing is ignored.  Errors read
``models/minilm.yaml: engine.max_batch_size: expected an integer between 1 and 16384, got 'x'``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tasks.bench import metrics
from tasks.core.errors import UserError, YamlError, shown
from tasks.spec import sweep
from tasks.spec.blockrules import check_block, check_blocks, kind_blocks
from tasks.spec.modelspec import (
    IMAGE_FAMILIES,
    IMPLEMENTED_KINDS,
    KINDS,
    MEMBER_ROLES,
    NAME_RE,
    TOP_KEYS,
    Check,
    ModelSpec,
    Where,
    one_of,
    positive,
    text,
)
from tasks.spec.sources import check_calibration, check_corpus, check_limits, check_prompts, check_source, checkpoint_config
from tasks.spec.yamlfile import read_yaml


def _check_top(data: dict[str, Any], stem: str, where: Where) -> tuple[str, str, str]:
    for key in data:
        if key not in TOP_KEYS:
            raise where.child(str(key)).error(f"unknown key (known: {', '.join(TOP_KEYS)})")
    for key in ("name", "kind"):
        if key not in data:
            raise where.child(key).error("required key is missing")
    name = text(data["name"], where.child("name"))
    if not NAME_RE.fullmatch(name):
        raise where.child("name").error(f"expected [a-z0-9][a-z0-9._-]* (lowercase, digits, '.', '_', '-'), got {shown(name)}")
    if name != stem:
        raise where.child("name").error(f"must equal the file name {shown(stem)}, got {shown(name)}")
    kind = one_of(*KINDS)(data["kind"], where.child("kind"))
    return name, kind, _check_family(data, kind, where)


def _check_family(data: dict[str, Any], kind: str, where: Where) -> str:
    if kind == "ensemble":
        return ""
    for key in ("family", "source"):
        if key not in data:
            raise where.child(key).error("required key is missing")
    family = text(data["family"], where.child("family"))
    families = IMPLEMENTED_KINDS[kind]
    if family not in families:
        msg = f"family {shown(family)} is not implemented yet for kind {kind} (implemented: {', '.join(families)})"
        raise where.child("family").error(msg)
    return family


def load_model(path: Path, shown: str | None = None) -> ModelSpec:
    """Parse and validate one model file; raise YamlError naming file and key.

    A file with ``sweep:`` gives one spec per point (its ``variants``); the returned spec
    stands for the file and carries the first point's blocks.
    """
    shown = shown or str(path)
    data = read_yaml(path, shown)
    where = Where(shown, "")
    name, kind, family = _check_top(data, path.stem, where)
    if kind == "ensemble" or "sweep" not in data:
        if "compare" in data and kind != "ensemble":
            raise where.child("compare").error("only used with sweep: (it picks the best variant of a sweep)")
        return _validated(data, path, shown, (name, kind, family), None, {})
    fields = kind_blocks(kind, family)
    settings = sweep.check_sweep(data["sweep"], data, fields, shown)
    read: dict[str, Any] = {}  # the checkpoint's config.json, read once for all points
    variants = tuple(
        _validated(sweep.apply(data, point), path, shown, (name, kind, family), point, read) for point in sweep.points(settings, shown)
    )
    compare = check_compare(data, kind, where.child("compare"))
    extra = {"compare": compare} if compare else {}
    variants = tuple(dataclasses.replace(v, blocks={**v.blocks, **extra}) for v in variants)
    first = variants[0]
    return dataclasses.replace(first, written=frozenset(map(str, data)), point=None, variants=variants)


def _validated(  # noqa: PLR0917 - one file's pieces, passed on as they were parsed
    data: dict[str, Any], path: Path, shown: str, top: tuple[str, str, str], point: sweep.Point | None, read: dict[str, Any]
) -> ModelSpec:
    name, kind, family = top
    where = Where(shown, "")
    try:
        blocks = check_blocks(data, kind, family, where)
    except YamlError as exc:
        if point is None:
            raise
        # The key is the one the rule names; which point broke it is what the user needs next.
        raise YamlError(exc.path, exc.key, f"{exc.message} (in the sweep point {point.name(name)})") from None
    source = check_source(data["source"], where.child("source")) if kind != "ensemble" else {}
    spec = ModelSpec(name, kind, family, Path(shown), source, blocks, frozenset(map(str, data)), point)
    if "config" not in read:
        read["config"] = checkpoint_config(source, path)
    check_limits(spec, read["config"])
    check_prompts(spec)
    check_calibration(spec)
    images = check_corpus(spec)
    return dataclasses.replace(spec, corpus_images=tuple(images)) if images else spec


def _limits(columns: tuple[str, ...]) -> Check:
    def check(value: Any, where: Where) -> dict[str, float]:  # noqa: ANN401 - raw YAML
        if not isinstance(value, dict):
            raise where.error(f"expected a mapping of bench CSV column to its upper bound, e.g. {{p99 latency: 50000}}, got {shown(value)}")
        for key in value:
            if key not in columns:
                raise where.child(str(key)).error(f"unknown column (known: {', '.join(columns)})")
        return {str(k): positive(v, where.child(str(k))) for k, v in value.items()}

    return check


def check_compare(data: dict[str, Any], kind: str, where: Where) -> dict[str, Any] | None:
    """``compare:`` (what makes a variant best), filled with defaults; None without a bench: block."""
    if "bench" not in data:
        if "compare" in data:
            raise where.error("needs a bench: block: variants are compared on their benchmark results")
        return None
    columns = metrics.columns(kind == "llm")[1:]  # everything measured; Concurrency is the axis
    fields: dict[str, tuple[Check, Any]] = {
        "maximize": (one_of(*columns), metrics.THROUGHPUT),
        "limits": (_limits(columns), {}),
    }
    return check_block(data.get("compare"), fields, where)


SUFFIXES = (".yaml", ".yml")


def _model_file(path: Path) -> bool:
    """Whether ``path`` is a model file; a near miss (``BAD.YAML``, ``My Model.yaml``) is an error, never skipped."""
    if path.name.startswith(".") or path.suffix.lower() not in SUFFIXES:
        return False  # hidden files are editors' (emacs locks are .#<name>.yaml)
    if path.suffix not in SUFFIXES:
        raise UserError(path.as_posix(), f"the suffix must be lower-case .yaml or .yml; rename it to {path.stem}{path.suffix.lower()}")
    if not NAME_RE.fullmatch(path.stem):
        msg = f"the file name is the model name: expected [a-z0-9][a-z0-9._-]* (lowercase, digits, '.', '_', '-'), got {shown(path.stem)}"
        raise UserError(path.as_posix(), msg)
    return True


def model_files(folder: Path) -> list[Path]:
    """``<name>.yaml`` then ``<name>.yml`` files of ``folder``, each sorted by name; one file per name."""
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return []
    files = sorted((p for p in entries if _model_file(p)), key=lambda p: (p.suffix != ".yaml", p.name))
    first: dict[str, Path] = {}
    for path in files:
        if path.stem in first:
            where = f"{first[path.stem].as_posix()}, {path.as_posix()}"
            raise UserError(where, f"both define model {path.stem} (task names build:{path.stem}, ...); keep one of them")
        first[path.stem] = path
    return files


def load_models(folder: Path, only: frozenset[str] | None = None) -> list[ModelSpec]:
    """All model files of ``folder`` (see ``model_files``), or those ``only`` names and the members of its ensembles.

    Every file name is still checked: two files for one model are an error whichever is asked for.
    """
    files = {p.stem: p for p in model_files(folder)}
    wanted = set(files) if only is None else {name for name in only if name in files}
    loaded: dict[str, ModelSpec] = {}
    while pending := sorted(wanted - set(loaded)):
        for name in pending:
            loaded[name] = load_model(files[name], files[name].as_posix())
            members = (sweep.base_name(m) for m in loaded[name].block("members").values() if m is not None)
            wanted |= {m for m in members if m in files}
    specs = [loaded[name] for name in files if name in loaded]
    check_members(specs)
    return specs


def member_problem(role: str, member: ModelSpec) -> str | None:
    """Why ``member`` cannot fill ``role`` of an ensemble, or None."""
    if member.kind != "encoder" or (role == "image") != (member.family in IMAGE_FAMILIES):
        return f"expected {MEMBER_ROLES[role]}, but {member.file} is kind {member.kind}, family {member.family}"
    return None


def find_member(specs: list[ModelSpec], name: str, where: Where) -> ModelSpec:
    """The model (or, for a swept model, the one variant) a ``members:`` entry names."""
    base = sweep.base_name(name)
    model = next((s for s in specs if s.name == base), None)
    if model is None:
        raise where.error(f"no model file {base}.yaml in the same folder")
    if not model.variants:
        if name != base:
            raise where.error(f"{model.file} has no sweep:, so no variant {name}; name the model: {base}")
        return model
    found = next((v for v in model.variants if v.variant == name), None)
    if found is None:
        # A member is one build: of a swept model, one of its variants, named in full.
        known = ", ".join(v.variant for v in model.variants)
        raise where.error(f"{model.file} has a sweep: name one of its variants ({known})")
    return found


def check_members(specs: list[ModelSpec]) -> None:
    """Members of every ensemble exist, fit their role and can take its batches."""
    for spec in specs:
        for role, name in spec.block("members").items():
            if name is None:
                continue
            where = Where(str(spec.file), f"members.{role}")
            member = find_member(specs, name, where)
            problem = member_problem(role, member)
            if problem is not None:
                raise where.error(problem)
            limit = member.block("triton")["max_batch_size"]
            if spec.block("triton")["max_batch_size"] > limit:
                wanted = spec.block("triton")["max_batch_size"]
                msg = f"expected <= triton.max_batch_size of {name} ({limit}): requests are passed on whole, got {wanted}"
                raise Where(str(spec.file), "triton.max_batch_size").error(msg)
