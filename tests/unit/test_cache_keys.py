"""What keeps action keys independent of the checkout path: trt LLM configs name the marker root, not a real path."""

from __future__ import annotations

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
