"""The rebuild matrix: for each kind of edit and each target, the exact set of stages a build runs.

One project holds two tiny BERT encoders built from one checkpoint: ``local`` (a local folder, with a
``bench:`` block) and ``hub`` (an offline Hugging Face cache).  Each edit toggles one thing (a YAML value, a
byte of a tensor, a tokenizer setting, the Hub branch's commit); the matrix is walked once per target on the
same project, each edit building on the previous one's result, so nothing is restored and nothing is built
twice.  Target trt runs the fake ``trtexec`` from ``tests/fakes`` up to the repository: its benchmark would
need Triton on a GPU.  The table's column without a benchmark is the same build without its ``bench`` task,
which no other stage depends on.

The sets are pinned in ``tests/unit/data/rebuild_matrix.json``, which also feeds the table in
docs/stages.md (``scripts/rebuild_table.py``).  After a deliberate change of what reruns, rewrite the
file with ``REBUILD_MATRIX=write pytest tests/integration/test_rebuild_matrix.py``, then run the script.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import FAKES, TINY_YAML, copy_project, doit_env, edit, run_doit
from tests.integration.test_fetch_hub import SHA, seed_cache
from tests.unit.test_rebuild_doc import MATRIX

NEWER = "fedcba9876543210fedcba9876543210fedcba98"
BENCH_BLOCK = """\
bench:
  concurrency: [1]
  measurement_interval_ms: 1000
  max_trials: 3
  warmup_requests: 2
  num_prompts: 4
"""
MODELS = ("local", "hub")


@dataclass(frozen=True)
class Project:
    root: Path
    checkpoint: Path  # the folder local reads
    hub: Path  # the Hugging Face cache hub reads


def yaml_of(name: str, source: str) -> str:
    text = TINY_YAML.format(path="unused").replace("name: tiny", f"name: {name}")
    return text.replace("source:\n  path: unused\n", source) + (BENCH_BLOCK if name == "local" else "")


def seed_newer_commit(hub: Path, checkpoint: Path) -> None:
    """A second snapshot of the repository whose used tensor differs by one byte (refs/main still names the first)."""
    changed = hub.parent / "newer-checkpoint"
    shutil.copytree(checkpoint, changed)
    flip_byte(changed / "model.safetensors", "encoder.layer.0.attention.self.query.weight")
    other = hub.parent / "other-cache"
    seed_cache(other, "acme/tiny-bert", changed)
    root, moved = hub / "models--acme--tiny-bert", other / "models--acme--tiny-bert"
    for blob in (moved / "blobs").iterdir():
        if not (root / "blobs" / blob.name).exists():
            shutil.copyfile(blob, root / "blobs" / blob.name)
    shutil.copytree(moved / "snapshots" / SHA, root / "snapshots" / NEWER, symlinks=True)


@pytest.fixture(scope="module")
def project(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("matrix")
    checkpoint = base / "checkpoint"
    shutil.copytree(tiny_bert, checkpoint)
    hub = base / "hf-cache"
    seed_cache(hub, "acme/tiny-bert", tiny_bert)
    seed_newer_commit(hub, tiny_bert)
    models = {
        "local": yaml_of("local", f"source:\n  path: {checkpoint}\n"),
        "hub": yaml_of("hub", "source:\n  hf: acme/tiny-bert\n  revision: main\n"),
    }
    return Project(copy_project(base / "project", models), checkpoint, hub)


def flip_byte(path: Path, tensor: str) -> None:
    """Toggle the lowest bit of the first element of one tensor of a safetensors file (twice restores it)."""
    data = bytearray(path.read_bytes())
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    start = 8 + size + header[tensor]["data_offsets"][0]
    data[start] ^= 1
    path.write_bytes(bytes(data))


def toggle_yaml(project: Project, first: str, second: str) -> None:
    """``first`` -> ``second`` in ``local``'s model file, or back when ``second`` is there."""
    path = project.root / "models/local.yaml"
    text = path.read_text(encoding="utf-8")
    edit(path, second, first) if second in text else edit(path, first, second)


def toggle_tokenizer_config(project: Project) -> None:
    path = project.checkpoint / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["model_max_length"] = 64 if config.get("model_max_length") != 64 else 48
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def toggle_hub_commit(project: Project) -> None:
    ref = project.hub / "models--acme--tiny-bert/refs/main"
    ref.write_text(NEWER if ref.read_text() == SHA else SHA)


def touch_inputs(project: Project) -> None:
    later = (project.checkpoint / "config.json").stat().st_mtime + 10
    for path in [*project.checkpoint.iterdir(), *(project.root / "models").iterdir()]:
        os.utime(path, (later, later))


# Edit id -> (what the table says, the edit).  Order matters only for reading: each edit is a fresh change.
EDITS: dict[str, tuple[str, Callable[[Project], None]]] = {
    "noop": ("nothing (a second build)", lambda _: None),
    "touch": ("`touch` of the checkpoint and model files", touch_inputs),
    "engine_batch": (
        "`engine.max_batch_size`",
        lambda p: toggle_yaml(p, "max_batch_size: 8\n  max_seq_len", "max_batch_size: 16\n  max_seq_len"),
    ),
    "engine_trt_only": (
        "`engine.precision`, `engine.opt_batch_size` (read by trtexec only)",
        lambda p: toggle_yaml(p, "engine:\n", "engine:\n  precision: fp16\n  opt_batch_size: 4\n"),
    ),
    "engine_seq": (
        "`engine.max_seq_len` (also read by the tokenizer's config)",
        lambda p: toggle_yaml(p, "max_seq_len: 32", "max_seq_len: 24"),
    ),
    "triton": ("`triton.max_batch_size`", lambda p: toggle_yaml(p, "triton:\n  max_batch_size: 8", "triton:\n  max_batch_size: 4")),
    "export": ("`export.pooling`", lambda p: toggle_yaml(p, "opset: 18\n", "opset: 18\n  pooling: cls\n")),
    "used_weight": (
        "a weight byte in a used tensor",
        lambda p: flip_byte(p.checkpoint / "model.safetensors", "encoder.layer.0.attention.self.query.weight"),
    ),
    "unused_weight": (
        "a weight byte in an unused tensor (pooler)",
        lambda p: flip_byte(p.checkpoint / "model.safetensors", "pooler.dense.weight"),
    ),
    "tokenizer": ("`tokenizer_config.json` edit", toggle_tokenizer_config),
    "hub_commit": ("Hub revision with a changed used byte (`hub` only)", toggle_hub_commit),
    "bench_block": ("`bench.concurrency`", lambda p: toggle_yaml(p, "concurrency: [1]", "concurrency: [2]")),
}


def build(project: Project, target: str) -> dict[str, list[str]]:
    """Build both models (on trt up to the repository); the stages each ran, by ``<target>/<model>``."""
    env = doit_env({"HF_HUB_CACHE": str(project.hub)}, path_prefix=FAKES)
    tasks = [f"build:{m}" if target == "cpu" else f"repo:{m}" for m in MODELS]
    result = run_doit(project.root, *tasks, f"target={target}", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    return {f"{target}/{m}": sorted(t.split(":")[0] for t in result.executed if t.endswith(f":{m}")) for m in MODELS}


def walk(project: Project) -> dict[str, dict[str, list[str]]]:
    found: dict[str, dict[str, list[str]]] = {}
    for target in ("cpu", "trt"):
        build(project, target)
        for name, (_, apply) in EDITS.items():
            apply(project)
            found.setdefault(name, {}).update(build(project, target))
    return found


def test_each_edit_runs_exactly_the_stages_whose_output_or_params_change(project: Project) -> None:
    found = walk(project)
    recorded = {name: {"edit": title, "ran": found[name]} for name, (title, _) in EDITS.items()}
    if os.environ.get("REBUILD_MATRIX") == "write":
        MATRIX.write_text(json.dumps(recorded, indent=1) + "\n", encoding="utf-8")
    expected = json.loads(MATRIX.read_text(encoding="utf-8"))
    assert {n: r["ran"] for n, r in recorded.items()} == {n: r["ran"] for n, r in expected.items()}
