"""Weight files are checked before any stage uses them: safetensors layout, and no NaN or Inf in any float tensor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

from tasks.core.errors import UserError
from tasks.families import weights

WHERE = "fetch:test"


def _write(folder: Path, tensors: dict[str, np.ndarray[Any, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_file(tensors, path)
    return path


def _good(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    return _write(
        folder,
        {
            "embeddings.weight": rng.standard_normal((16, 8)).astype(np.float32),
            "layer.0.dense.weight": rng.standard_normal((8, 8)).astype(np.float16),
            "layer.0.dense.bias": np.zeros(8, np.float64),
            "position_ids": np.arange(16, dtype=np.int64),
        },
    )


def _refused(path: Path, pattern: str) -> str:
    with pytest.raises(UserError, match=pattern) as caught:
        weights.check_folder(path.parent, WHERE)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{WHERE}: {path}")
    return text


def _split(path: Path) -> tuple[dict[str, object], bytes]:
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _rewrite(path: Path, header: dict[str, object], data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_a_sound_checkpoint_passes_and_is_counted(tmp_path: Path) -> None:
    path = _good(tmp_path)
    checked = weights.check_folder(tmp_path, WHERE)
    assert (checked.files, checked.tensors, checked.bytes) == (1, 4, path.stat().st_size)


@pytest.mark.parametrize(
    ("dtype", "value", "kind"),
    [(np.float32, np.nan, "NaN"), (np.float32, -np.inf, "Inf"), (np.float16, np.inf, "Inf"), (np.float64, np.nan, "NaN")],
)
def test_a_nan_or_inf_is_refused_naming_file_tensor_and_element(tmp_path: Path, dtype: type, value: float, kind: str) -> None:
    bad: np.ndarray[Any, Any] = np.ones((4, 5), dtype)
    bad[2, 3] = value
    path = _write(tmp_path, {"a.weight": np.ones(3, dtype), "b.weight": bad})
    _refused(path, rf"tensor 'b\.weight' \(\w+ \[4, 5\]\) holds {kind} at element 13")


def test_an_all_nan_checkpoint_names_its_first_tensor(tmp_path: Path) -> None:
    path = _write(tmp_path, {"x.bias": np.full(4, np.nan, np.float32), "y.bias": np.full(4, np.nan, np.float32)})
    _refused(path, r"tensor 'x\.bias' .* holds NaN at element 0")


@pytest.mark.parametrize(("value", "kind"), [(float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")])
def test_bf16_is_checked_on_its_own_bits(tmp_path: Path, value: float, kind: str) -> None:
    tensor = torch.full((3, 4), 3.0e38, dtype=torch.bfloat16)  # finite, near bf16's largest value
    folder = tmp_path / "ok"
    folder.mkdir()
    save_torch({"w": tensor}, folder / "model.safetensors")
    assert weights.check_folder(folder, WHERE).tensors == 1
    tensor[1, 2] = value
    save_torch({"w": tensor}, tmp_path / "model.safetensors")
    _refused(tmp_path / "model.safetensors", rf"tensor 'w' \(BF16 \[3, 4\]\) holds {kind} at element 6")


def test_fp8_nan_is_refused(tmp_path: Path) -> None:
    tensor = torch.ones(8, dtype=torch.float32)
    tensor[5] = float("nan")
    save_torch({"w8": tensor.to(torch.float8_e4m3fn)}, tmp_path / "model.safetensors")
    _refused(tmp_path / "model.safetensors", r"tensor 'w8' \(F8_E4M3 \[8\]\) holds NaN at element 5")


def test_a_nan_past_the_first_chunk_is_found_at_its_element(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "CHUNK_BYTES", 64)  # 16 floats per chunk: the tensor spans many
    bad = np.zeros(1000, np.float32)
    bad[777] = np.inf
    _refused(_write(tmp_path, {"big": bad}), r"'big' \(F32 \[1000\]\) holds Inf at element 777")


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    _refused(path, "empty file")


def test_a_truncated_file_names_the_tensor_it_cuts(tmp_path: Path) -> None:
    path = _good(tmp_path)
    header, data = _split(path)
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])  # type: ignore[index]
    path.write_bytes(path.read_bytes()[:-10])
    _refused(path, rf"file ends 10 bytes before the data of tensor '{last}' does \(truncated")
    assert data  # the cut removed tensor bytes, not the header


def test_a_file_cut_inside_its_header_is_refused(tmp_path: Path) -> None:
    path = _good(tmp_path)
    path.write_bytes(path.read_bytes()[:40])
    _refused(path, r"header length \d+ runs past the end of the 40-byte file")


@pytest.mark.parametrize(
    ("header", "pattern"),
    [
        (b"\xff\xfe not utf-8", "header is not UTF-8"),
        (b"{not json", "header is not valid JSON"),
        (b"[1, 2]", "header is not a JSON object"),
        (b'{"w": {"dtype": "F32", "shape": [2]}}', "tensor 'w': header entry needs dtype, shape and two data_offsets"),
        (b'{"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}', "tensor 'w': unknown dtype 'Q7'"),
        (b'{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}', r"tensor 'w': shape \[-2\] is not a list of sizes >= 0"),
    ],
)
def test_a_bad_header_is_refused(tmp_path: Path, header: bytes, pattern: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    _refused(path, pattern)


def test_a_header_length_beyond_any_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    _refused(path, r"header length 1099511627776 is not in 1\.\.100000000")


def test_a_shape_that_does_not_match_its_bytes_is_refused(tmp_path: Path) -> None:
    path = _good(tmp_path)
    header, data = _split(path)
    header["embeddings.weight"]["shape"] = [16, 9]  # type: ignore[index]
    _rewrite(path, header, data)
    _refused(path, r"tensor 'embeddings\.weight': F32 \[16, 9\] needs 576 bytes, data_offsets \[\d+, \d+\] hold 512")


def test_overlapping_tensors_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)})
    header, data = _split(path)
    header["b"]["data_offsets"] = [8, 24]  # type: ignore[index]
    _rewrite(path, header, data)
    _refused(path, r"tensor 'b' \(data_offsets \[8, 24\]\) overlaps 'a'")


def test_bytes_no_tensor_describes_are_refused(tmp_path: Path) -> None:
    path = _good(tmp_path)
    with path.open("ab") as f:
        f.write(bytes(12))
    _refused(path, "12 bytes after the last tensor that no tensor describes")


def test_a_pickled_checkpoint_with_nan_is_refused(tmp_path: Path) -> None:
    state = {"w": torch.ones(2, 3), "ids": torch.arange(3)}
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert weights.check_folder(tmp_path, WHERE).tensors == 2
    state["w"][1, 1] = float("nan")
    torch.save(state, tmp_path / "pytorch_model.bin")
    _refused(tmp_path / "pytorch_model.bin", r"tensor 'w' \(torch\.float32 \[2, 3\]\) holds NaN at element 4")


def test_a_pickle_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a zip, not a pickle")
    _refused(tmp_path / "pytorch_model.bin", "not a loadable PyTorch checkpoint")
