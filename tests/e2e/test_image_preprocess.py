"""The image preprocessing python model served by the real Triton, with an error per unreadable request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tasks.stages import config
from tasks.triton.launcher import TritonServer
from tests.support.images import IMAGES, TEMPLATE, load_model_module


def test_served_by_triton_with_per_request_errors(processor_dir: Path, tmp_path: Path) -> None:
    model = load_model_module()
    settings = model.Settings.from_config(json.loads((processor_dir / "preprocessor_config.json").read_text()))
    repo = tmp_path / "repo" / "images"
    (repo / "1").mkdir(parents=True)
    values = {"preprocess_model": "images", "max_batch_size": 4, "instance_count": 1, "crop_height": 28, "crop_width": 30}
    text = config.fill(TEMPLATE / "config.pbtxt", values)
    config.parse(text, TEMPLATE / "config.pbtxt")
    (repo / "config.pbtxt").write_text(text)
    shutil.copy(TEMPLATE / "1" / "model.py", repo / "1" / "model.py")
    shutil.copy(processor_dir / "preprocessor_config.json", repo / "1" / "preprocessor_config.json")

    def infer(client: grpcclient.InferenceServerClient, items: list[bytes]) -> np.ndarray[Any, Any]:
        tensor = grpcclient.InferInput("image", [len(items), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[item] for item in items], dtype=np.object_))
        result: np.ndarray[Any, Any] | None = client.infer("images", [tensor]).as_numpy("pixel_values")
        assert result is not None
        return result

    with TritonServer(repo.parent, "cpu", tmp_path / "triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            got = infer(client, IMAGES[:2])
            with pytest.raises(InferenceServerException, match="not a readable image"):
                infer(client, [b"definitely not an image"])
            again = infer(client, IMAGES[2:])  # the server keeps serving
        finally:
            client.close()
    assert got.shape == (2, 3, 28, 30)
    for i, data in enumerate(IMAGES[:2]):
        assert np.array_equal(got[i], model.preprocess(data, settings))
    assert again.shape == (2, 3, 28, 30)
