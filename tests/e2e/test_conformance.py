"""The conformance kit without a GPU: fake trtllm-build, trtexec, tritonserver and convert_checkpoint.py.

End to end on GPT-2 and BERT (one LLM, one encoder: all six take ~10 minutes on this 2-core
machine, too long for CI; the other four share every code path but the YAML and the request
list).  The fake trt server answers from the cpu server's own record (the run that passes), then
from a copy with one token and one embedding changed while the fake converter shifts one tensor
(the run that must fail, one line per failed check).  tests/unit/test_conformance.py covers the kit's parts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.commands.conformance import answers
from tests.helpers import FAKES, copy_project, doit_argv, doit_env, read_json

SUBSET = "gpt2,bert"
CHECKS = {"gpt2": ["answers", "build-cpu", "build-trt", "converter"], "bert": ["answers", "build-cpu", "build-trt"]}


def examples_tree(dest: Path) -> Path:
    """TensorRT-LLM's examples/ layout with the fake converter at each family's path."""
    for family in ("enc_dec", "gpt", "llama", "gemma"):
        folder = dest / "models/core" / family
        folder.mkdir(parents=True)
        (folder / "convert_checkpoint.py").symlink_to(FAKES / "convert_checkpoint.py")
    return dest


def kit(root: Path, canned: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = doit_env({"FAKE_TRITON_ANSWERS": str(canned), "FAKE_CONVERT_LOG": str(root / "convert.jsonl"), **extra}, path_prefix=FAKES)
    env["PATH"] = f"{FAKES / 'serving'}{os.pathsep}{env['PATH']}"
    argv = doit_argv("conformance", "target=trt", f"models={SUBSET}", f"trtllm_examples={root / 'examples'}")
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def passed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    root = copy_project(tmp_path_factory.mktemp("conformance"), {})
    examples_tree(root / "examples")
    started = time.monotonic()
    # The fake trt server answers what the cpu server recorded moments before: a GPU that agrees.
    done = kit(root, root / "build/conformance/answers/cpu.json")
    return root, done, time.monotonic() - started


def test_the_kit_passes_when_trt_answers_what_cpu_answers(passed: tuple[Path, subprocess.CompletedProcess[str], float]) -> None:
    root, done, seconds = passed
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"kit runtime with fakes, {SUBSET} from scratch: {seconds:.0f} s")
    data = read_json(root / "results/conformance/report.json")
    assert data["status"] == "pass"
    assert data["failures"] == []
    models = data["models"]
    assert isinstance(models, dict)
    assert sorted(models) == ["bert", "gpt2"]
    for name, entry in models.items():
        assert sorted(entry["checks"]) == CHECKS[name]
        assert {c["status"] for c in entry["checks"].values()} == {"pass"}
        assert entry["toolchain"]["tensorrt_llm"] == "1.2.1"  # what the fake trtllm-build reports
        assert entry["toolchain"]["tensorrt"] == "10.14.1"  # what the fake trtexec reports
        assert {"gpu", "compute_capability", "container"} <= set(entry["toolchain"])
        assert entry["seconds"] > 0
    gpt2 = models["gpt2"]["checks"]
    assert [i["request"] for i in gpt2["answers"]["items"]] == answers.DECODER_PROMPTS
    assert all(i["cpu"] == i["trt"] and i["cpu"] for i in gpt2["answers"]["items"])
    assert gpt2["converter"]["tensors"]["."] > 0
    bert = models["bert"]["checks"]["answers"]["items"]
    assert [round(i["cosine"], 6) for i in bert] == [1.0, 1.0, 1.0]
    text = (root / "results/conformance/report.md").read_text()
    assert text.startswith("# Conformance: trt against cpu — PASS")
    assert "| gpt2 | gpt2 | pass | pass | pass | pass |" in text
    assert "| bert | bert | pass | pass | pass | - |" in text
    # Both targets were really built: plans and engines by the fake tools on trt, none on cpu.
    assert (root / "build/conformance/trt/repos/bert/bert_encoder/1/model.plan").is_file()
    assert (root / "build/conformance/trt/build/gpt2/engine/trt/engine/rank0.engine").is_file()
    assert (root / "build/conformance/cpu/repos/bert/bert_encoder/1/model.onnx").is_file()
    call = json.loads((root / "convert.jsonl").read_text().splitlines()[0])
    assert call[0] == "gpt"
    assert call[1:] == ["--model_dir", "build/conformance/checkpoints/gpt2", "--output_dir",
                        "build/conformance/upstream/gpt2", "--dtype", "float32"]  # fmt: skip


def test_a_wrong_token_a_far_embedding_and_a_shifted_tensor_each_fail_in_one_line(
    passed: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    root, first, _ = passed
    assert first.returncode == 0
    canned = json.loads((root / "build/conformance/answers/cpu.json").read_text())
    prompt = answers.DECODER_PROMPTS[1]
    right = canned["gpt2"]["ensemble"][prompt]["text_output"]
    canned["gpt2"]["ensemble"][prompt]["text_output"] = right + " drums"  # one token more
    key = answers.TEXTS[0]
    vector = np.array(canned["bert"]["bert"][key]["embedding"])
    canned["bert"]["bert"][key]["embedding"] = (vector + np.roll(vector, 1) * 0.1).tolist()  # cosine ~0.99
    wrong = root / "wrong.json"
    wrong.write_text(json.dumps(canned))
    done = kit(root, wrong, FAKE_CONVERT_PERTURB="gpt2")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("conformance FAIL")]
    assert len(lines) == 3, done.stderr
    assert lines[0].startswith("conformance FAIL bert: answers: 'a man is eating food': cosine 0.99")
    assert lines[0].endswith("< 0.999")
    assert lines[1] == f"conformance FAIL gpt2: answers: {prompt!r}: trt {right + ' drums'!r} != cpu {right!r}"
    assert lines[2].startswith(
        "conformance FAIL gpt2: converter: rank0.safetensors: lm_head.weight: values differ (max |ours - theirs| = 0.01"
    )
    data = read_json(root / "results/conformance/report.json")
    assert data["status"] == "fail"
    assert data["failures"] == [line.removeprefix("conformance FAIL ") for line in lines]
    assert "3 conformance check(s) failed; see results/conformance/report.md" in done.stdout + done.stderr
    text = (root / "results/conformance/report.md").read_text()
    assert text.startswith("# Conformance: trt against cpu — FAIL")
    assert "| gpt2 | gpt2 | pass | pass | fail | fail |" in text


# ---- units --------------------------------------------------------------------------------------


def test_target_cpu_is_refused_in_one_line(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p", {})
    done = subprocess.run(doit_argv("conformance", "target=cpu"), cwd=root, env=doit_env(), capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert (
        "conformance: compares target trt with cpu: run it with target=trt inside the GPU image (target is cpu)"
        in done.stdout + done.stderr
    )
    assert not (root / "build/conformance").exists()
