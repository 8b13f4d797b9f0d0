"""A broken or mismatched checkpoint fails the build with one line naming file and tensor, before it is exported."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.helpers import TINY_YAML, DoitRun, copy_project, run_doit

Tensors = dict[str, "np.ndarray[object, np.dtype[np.float32]]"]


def _all_nan(tensors: Tensors) -> None:
    for name, value in tensors.items():
        if value.dtype.kind == "f":
            tensors[name] = np.full_like(value, np.nan)


def _one_inf(tensors: Tensors) -> None:
    value = tensors["encoder.layer.1.output.dense.weight"].copy()
    value[3, 7] = np.inf
    tensors["encoder.layer.1.output.dense.weight"] = value


def _missing(tensors: Tensors) -> None:
    del tensors["encoder.layer.1.output.dense.weight"]


def _broken(tiny_bert: Path, folder: Path, change: Callable[[Tensors], None]) -> Path:
    shutil.copytree(tiny_bert, folder)
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors")
    return folder


def _build(tmp_path: Path, folder: Path) -> DoitRun:
    project = copy_project(tmp_path / "proj", {"tiny": TINY_YAML.format(path=folder)})
    return run_doit(project, "build:tiny", "target=cpu")


def _fails_in_one_line(run: DoitRun, stage: str, *fragments: str) -> str:
    """The failing stage's message: one line holding every fragment; no traceback anywhere."""
    out = run.stdout + run.stderr
    assert run.rc != 0, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.removeprefix("ERROR: ").startswith(f"{stage}:tiny: ")]
    assert len(lines) == 1, out
    for fragment in fragments:
        assert fragment in lines[0], out
    return lines[0]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_all_nan, "tensor 'embeddings.LayerNorm.bias' (F32 [32]) holds NaN at element 0"),
        (_one_inf, "tensor 'encoder.layer.1.output.dense.weight' (F32 [32, 64]) holds Inf at element 199"),
    ],
)
def test_non_finite_weights_fail_at_fetch(tiny_bert: Path, tmp_path: Path, change: Callable[[Tensors], None], fragment: str) -> None:
    folder = _broken(tiny_bert, tmp_path / "ck", change)
    run = _build(tmp_path, folder)
    _fails_in_one_line(run, "fetch", f"{folder}/model.safetensors: ", fragment)
    assert run.executed == {"fetch:tiny"}
    assert not (tmp_path / "proj/repos/tiny").exists()


def test_a_truncated_download_fails_at_fetch(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    shutil.copytree(tiny_bert, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    _fails_in_one_line(_build(tmp_path, folder), "fetch", f"{weights}: file ends 100 bytes before the data of tensor")


def test_a_gpt2_config_under_family_bert_fails_at_export(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (folder / "config.json").write_text(json.dumps(config))
    _fails_in_one_line(_build(tmp_path, folder), "export", "config.json: model_type is 'gpt2'; family bert expects model_type 'bert'")


def test_a_missing_tensor_fails_at_export_instead_of_random_weights(tiny_bert: Path, tmp_path: Path) -> None:
    folder = _broken(tiny_bert, tmp_path / "ck", _missing)
    line = _fails_in_one_line(_build(tmp_path, folder), "export", "no tensor encoder.layer.1.output.dense.weight")
    assert "would be random" in line
