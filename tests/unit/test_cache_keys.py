"""What keeps action keys independent of the checkout path: trt LLM configs name the marker root, not a real path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core import inputnames
from tasks.triton import repository


def test_trt_llm_configs_name_the_marker_root_until_the_repository_is_assembled() -> None:
    from tasks.triton import llm_layout

    values = llm_layout.template_values(
        "m",
        {"max_batch_size": 1, "instance_count": 1, "max_queue_delay_us": 0, "decoupled": False, "kv_cache_free_gpu_mem_fraction": 0.9,
         "cross_kv_cache_fraction": None, "batch_scheduler_policy": "guaranteed_no_evict"},
        {"max_input_len": 8, "max_output_len": 8},
        "trt",
        repository.REPOSITORY_MARKER,
        {},
    )  # fmt: skip
    assert values["decoder_engine_dir"] == f"{repository.REPOSITORY_MARKER}/tensorrt_llm/1/engine"


def test_a_virtualenv_inside_the_checkout_names_its_package_files_as_one_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = "lib/python3.11/site-packages/pkg/model"
    inside, outside = tmp_path / "checkout", tmp_path / "venvs/env"
    inside.mkdir()
    monkeypatch.chdir(inside)
    names = {}
    for venv in (inside / ".venv", outside):
        files = [Path("build/m/fetch/manifest.json"), venv / package / "config.json", venv / package / "1_Pooling/config.json"]
        names[venv] = inputnames.input_names(files)
    assert (
        names[inside / ".venv"]
        == names[outside]
        == ["build/m/fetch/manifest.json", "external:config.json", "external:1_Pooling/config.json"]
    )
