"""The conformance kit's parts without running it: upstream converter command lines, tensor and answer
comparison, model selection, and the report a run updates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.commands.conformance import answers, crosscheck, project, report
from tests.helpers import read_json


def test_upstream_converter_command_lines_follow_each_family() -> None:
    hf, out, ex = Path("/ckpt"), Path("/out"), Path("/app/examples")
    argv = {m.name: crosscheck.upstream_argv(ex, m, hf, out)[1:] for m in project.select("llm")}
    assert argv["t5"] == ["/app/examples/models/core/enc_dec/convert_checkpoint.py", "--model_type", "t5", "--tp_size", "1",
                          "--pp_size", "1", "--model_dir", "/ckpt", "--output_dir", "/out", "--dtype", "float32"]  # fmt: skip
    assert argv["llama"] == ["/app/examples/models/core/llama/convert_checkpoint.py", "--model_dir", "/ckpt", "--output_dir", "/out",
                             "--dtype", "float32"]  # fmt: skip
    assert argv["gemma"] == ["/app/examples/models/core/gemma/convert_checkpoint.py", "--ckpt-type", "hf", "--model-dir", "/ckpt",
                             "--output-model-dir", "/out", "--dtype", "float32", "--world-size", "1"]  # fmt: skip


def test_a_missing_upstream_converter_is_a_failed_check_naming_the_path(tmp_path: Path) -> None:
    result = crosscheck.run(tmp_path, project.MODELS["t5"], hf=tmp_path, ours=tmp_path, out=tmp_path / "o", log=tmp_path / "l")
    assert not result.ok
    assert (
        result.detail
        == f"{tmp_path}/models/core/enc_dec/convert_checkpoint.py not found; point trtllm_examples= at TensorRT-LLM's examples/ of the image's version"
    )


def test_tensor_comparison_names_missing_reshaped_and_changed_tensors() -> None:
    ours = {"a": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float32), "c": np.ones(2, np.float32), "d": np.ones(1, np.float32)}
    theirs = {"a": np.zeros((3, 2), np.float32), "b": np.ones(4, np.float32), "c": np.array([1, 1.5], np.float32), "e": ours["d"]}
    problems, compared = crosscheck.compare_tensors(ours, theirs)
    assert compared == 3
    assert problems == ["d: only in ours", "e: only in theirs", "a: shape [2, 3] (ours) != [3, 2] (theirs)",
                        "c: values differ (max |ours - theirs| = 0.5)"]  # fmt: skip


def test_embeddings_compare_by_cosine_and_texts_exactly() -> None:
    bert, gemma = project.MODELS["bert"], project.MODELS["gemma"]
    same = [[1.0, 2.0, 3.0]] * 3
    items, problems = answers.compare(bert, same, [[1.0, 2.0, 3.001], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert [i["ok"] for i in items] == [True, True, False]
    assert problems == ["'triton serves models on cpu and gpu': cosine 0.714286 < 0.999"]
    _, problems = answers.compare(gemma, ["a b", "c", "d"], ["a b", "c", "d e"])
    assert problems == ["'a monkey is playing drums on': trt 'd e' != cpu 'd'"]


def test_models_select_groups_and_refuse_unknown_names() -> None:
    assert [m.name for m in project.select("all")] == ["t5", "gpt2", "llama", "gemma", "bert", "clip"]
    assert [m.name for m in project.select("encoders,gpt2,bert")] == ["bert", "clip", "gpt2"]
    with pytest.raises(Exception, match=r"conformance: models: unknown model or group 'gpt3'; expected a comma list of all, llm"):
        project.select("gpt2,gpt3")


def test_a_run_replaces_its_models_and_keeps_the_others(tmp_path: Path) -> None:
    entry = {"family": "x", "kind": "llm", "seconds": 1.0, "finished": "t", "toolchain": {"gpu": "H100"}}
    ok = report.check(ok=True, seconds=1, detail="fine")
    bad = report.check(ok=False, seconds=1, detail="texts differ")
    report.write(tmp_path, {"t5": {**entry, "checks": {"answers": bad}}, "bert": {**entry, "checks": {"answers": ok}}})
    data = report.write(tmp_path, {"t5": {**entry, "checks": {"answers": ok}}})
    assert data["status"] == "pass"
    assert sorted(data["models"]) == ["bert", "t5"]
    again = report.write(tmp_path, {"clip": {**entry, "checks": {"answers": bad, "build-trt": bad}}})
    assert again["failures"] == ["clip: answers: texts differ", "clip: build-trt: texts differ"]
    assert read_json(tmp_path / "report.json") == again
