"""A checkpoint is of its family and whole; failures at export and engine are one line, disk full named as such."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from doit.exceptions import TaskFailed
from safetensors.numpy import load_file, save_file

from tasks.core import lock
from tasks.core import stage as stage_module
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.families.checkpoint import check_family, load_pretrained
from tasks.stages import engine, export

WHERE = "export:test"


def test_a_gpt2_config_under_family_bert_is_refused() -> None:
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    with pytest.raises(UserError, match=r"^export:test: ck/config\.json: model_type is 'gpt2'; family bert expects model_type 'bert'"):
        check_family(config, "bert", Path("ck/config.json"), WHERE)


def test_architectures_must_be_of_the_model_type() -> None:
    config = {"model_type": "bert", "architectures": ["GPT2LMHeadModel"]}
    with pytest.raises(UserError, match=r"architectures \['GPT2LMHeadModel'\] under model_type 'bert'; family bert expects Bert\* classes"):
        check_family(config, "bert", Path("config.json"), WHERE)


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("bert", {"model_type": "bert", "architectures": ["BertModel"]}),
        ("bert", {"model_type": "bert"}),
        ("clip-vision", {"model_type": "clip_vision_model", "architectures": ["CLIPVisionModelWithProjection"]}),
        ("clip-vision", {"model_type": "clip", "architectures": ["CLIPModel"]}),
        ("t5", {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}),
    ],
)
def test_checkpoints_of_the_family_pass(family: str, config: dict[str, object]) -> None:
    check_family(config, family, Path("config.json"), WHERE)


def _bert_copy(tiny_bert: Path, dest: Path) -> dict[str, np.ndarray[Any, Any]]:
    shutil.copytree(tiny_bert, dest)
    return load_file(dest / "model.safetensors")


def test_a_missing_tensor_is_named_not_initialised_at_random(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    folder = tmp_path / "ck"
    tensors = _bert_copy(tiny_bert, folder)
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"model\.safetensors: no tensor encoder\.layer\.1\.output\.dense\.weight \(1 weights of"):
        load_pretrained(AutoModel, folder)


def test_a_tensor_of_the_wrong_shape_is_named(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    folder = tmp_path / "ck"
    tensors = _bert_copy(tiny_bert, folder)
    tensors["encoder.layer.0.attention.self.query.weight"] = tensors["encoder.layer.0.attention.self.query.weight"][:, :-1].copy()
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"tensor encoder\.layer\.0\.attention\.self\.query\.weight has shape \[32, 31\]") as caught:
        load_pretrained(AutoModel, folder)
    assert "\n" not in str(caught.value)


def test_a_whole_checkpoint_loads(tiny_bert: Path) -> None:
    from transformers import AutoModel

    model = load_pretrained(AutoModel, tiny_bert, unused=("pooler.",))
    assert type(model).__name__ == "BertModel"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_export_refuses_outputs_that_are_not_finite(bad: float) -> None:
    want = np.ones((2, 4), np.float32)
    have = want.copy()
    have[1, 2] = bad
    with pytest.raises(UserError, match=r"^export:test: m\.onnx: output emb holds (NaN|Inf) under ONNX Runtime"):
        export.largest_diff("m.onnx: output emb", want, have, WHERE)
    with pytest.raises(UserError, match="under PyTorch"):
        export.largest_diff("m.onnx: output emb", have, want, WHERE)
    assert export.largest_diff("m.onnx: output emb", want, want + 0.25, WHERE) == 0.25


def _failing_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError) -> Stage:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lock, "hold", lambda: None)

    def action(ctx: StageContext) -> None:
        (ctx.out / "part").write_bytes(b"x")
        raise error

    return Stage("fetch", "m", {"code": "1"}, tmp_path / "build/m/fetch", action, "disk full test")


def test_disk_full_in_a_stage_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = _failing_stage(tmp_path, monkeypatch, OSError(errno.ENOSPC, "No space left on device", "build/m/fetch/model.safetensors"))
    failed = stage_module.run_stage(stage)
    assert isinstance(failed, TaskFailed)
    assert failed.message.startswith("fetch:m: disk full while writing build/m/fetch/model.safetensors (")
    assert not stage.out_dir.exists()


def test_other_os_errors_still_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = _failing_stage(tmp_path, monkeypatch, OSError(errno.EIO, "I/O error"))
    with pytest.raises(OSError, match="I/O error"):
        stage_module.run_stage(stage)


def _engine_ctx(tmp_path: Path, onnx_bytes: bytes) -> StageContext:
    source, out = tmp_path / "export", tmp_path / "work"
    source.mkdir()
    out.mkdir()
    (source / "model.onnx").write_bytes(onnx_bytes)
    stage = Stage("engine", "m", {"engine": {}, "target": "cpu"}, tmp_path / "engine", engine.action, "test", target="cpu")
    return StageContext(stage, out, {"onnx": source})


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.ones(16, np.float32).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return bytes(model.SerializeToString())


def test_an_onnx_file_onnxruntime_cannot_read_is_one_line(tmp_path: Path) -> None:
    ctx = _engine_ctx(tmp_path, b"not an onnx model")
    with pytest.raises(UserError, match=rf"^engine:m: onnxruntime cannot optimise {tmp_path}/export/model\.onnx into .*INVALID_PROTOBUF"):
        engine.build_cpu(ctx)


def test_a_full_disk_under_the_cpu_engine_is_named_not_invalid_protobuf(tmp_path: Path) -> None:
    ctx = _engine_ctx(tmp_path, _tiny_onnx())
    (ctx.out / "model.onnx").symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(UserError, match=rf"^engine:m: disk full while writing {ctx.out}/model\.onnx") as caught:
        engine.build_cpu(ctx)
    assert "PROTOBUF" not in str(caught.value)


def test_the_cpu_engine_still_optimises_a_sound_model(tmp_path: Path) -> None:
    ctx = _engine_ctx(tmp_path, _tiny_onnx())
    engine.build_cpu(ctx)
    assert (ctx.out / "model.onnx").stat().st_size > 0
    assert json.dumps(ctx.record) == '{"onnxruntime_level": "extended"}'
