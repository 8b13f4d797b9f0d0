"""export: an encoder checkpoint -> ONNX with dynamic batch and sequence, checked against PyTorch.

The graph takes INT32 ``input_ids``, ``attention_mask`` and ``token_type_ids``
(TensorRT and Triton's tokenizer model both speak INT32) and returns
``last_hidden_state`` and the pooled ``sentence_embedding``, so pooling and
normalisation run inside the engine on both targets.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import logs
from tasks.errors import UserError
from tasks.stage import StageContext

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

CODE_VERSION = "1"
TOOLCHAIN = ("torch", "transformers", "onnx", "onnxscript")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state", "sentence_embedding")
TOLERANCE = 1e-4


def _wrapper(model: Any, pooling: str, normalize: bool) -> torch.nn.Module:  # noqa: ANN401, FBT001
    import torch  # noqa: PLC0415 - heavy; only the export action needs it

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.model(
                input_ids=input_ids.long(), attention_mask=attention_mask.long(), token_type_ids=token_type_ids.long()
            ).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return hidden, pooled

    return Pooled().eval()


def sample_inputs(vocab: int, lengths: list[int], seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """Random token ids with right padding, one row per length."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = rng.integers(1, vocab, size=(len(lengths), width), dtype=np.int32)
    mask = (np.arange(width)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _export(module: torch.nn.Module, path: Path, opset: int) -> None:
    import torch  # noqa: PLC0415

    example = tuple(torch.from_numpy(v) for v in sample_inputs(100, [7, 5]).values())
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(
        module,
        example,
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=opset,
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_shapes={name: {0: batch, 1: seq} for name in INPUTS},
    )


def compare(module: torch.nn.Module, path: Path, vocab: int) -> float:
    """Largest |ONNX Runtime - PyTorch| over two batches of different shapes."""
    import onnxruntime as ort  # noqa: PLC0415
    import torch  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a fixed reduction order: the same bytes give the same diff
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for lengths in ([5, 9, 13], [4]):
        feeds = sample_inputs(vocab, lengths, seed=len(lengths))
        with torch.no_grad():
            expected = module(*(torch.from_numpy(v) for v in feeds.values()))
        got = session.run(list(OUTPUTS), feeds)
        for want, have in zip(expected, got, strict=True):
            worst = max(worst, float(abs(want.numpy() - have).max()))
    return worst


def action(ctx: StageContext) -> None:
    import onnx  # noqa: PLC0415
    from transformers import AutoModel  # noqa: PLC0415

    settings = ctx.params["export"]
    source = ctx.inputs["hf"]
    out = ctx.out / "model.onnx"
    log_path = ctx.log_path("export")
    log.info("export: %s -> ONNX opset %d (log: %s)", source, settings["opset"], log_path)
    log_path.unlink(missing_ok=True)
    with logs.output_to(log_path):
        model = AutoModel.from_pretrained(source, local_files_only=True).eval()
        module = _wrapper(model, settings["pooling"], settings["normalize"])
        try:
            _export(module, out, settings["opset"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(ctx.stage.task_name, f"ONNX export failed: {first} (full log: {log_path})") from exc
        onnx.checker.check_model(str(out))
        diff = compare(module, out, int(model.config.vocab_size))
    ctx.record["max_abs_diff_vs_pytorch"] = diff
    log.info("export: max |onnxruntime - pytorch| = %.2e", diff)
    if diff > TOLERANCE:
        raise UserError(ctx.stage.task_name, f"ONNX output differs from PyTorch by {diff:.2e} (> {TOLERANCE:g})")
