"""The filled LLM configs against NVIDIA's inflight-batcher templates of the pinned version (the parity table)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tasks.bench import perftools, workload
from tasks.spec import schema
from tasks.stages import config, repo
from tasks.triton import llm_layout, parity, repository
from tests.unit.test_perftools import flag, genai_kwargs, make_run

# The shipped model files, one per family: their triton and engine blocks are what gets filled.
MODEL_FILES = {"t5": "flan-t5", "gpt2": "gpt2-medium", "llama": "llama-2-7b", "gemma": "gemma-2b-it"}
KINDS = [(family, decoupled) for family in MODEL_FILES for decoupled in (False, True)]
REPO = Path("/srv/repos/m")


def filled(family: str, target: str, *, decoupled: bool, repo_dir: Path = REPO) -> dict[str, Any]:
    """The five parsed configs of ``family``'s shipped model file, filled in-process as the config stage does."""
    spec = schema.load_model(Path(__file__).parents[2] / "models" / f"{MODEL_FILES[family]}.yaml")
    triton = {**spec.block("triton"), "decoupled": decoupled}
    engine = {k: spec.block("engine")[k] for k in config.LLM_CONFIG_ENGINE_KEYS}
    values = llm_layout.template_values(spec.name, triton, engine, target, repo_dir, {"is_encoder_decoder": family == "t5"})
    configs = {}
    for model in llm_layout.llm_models(target, tokenizer_files=[], hf_files=[], engine_dirs=llm_layout.engine_dirs(family)):
        template = model.template_dir / "config.pbtxt"
        configs[model.name] = config.parse(config.fill(template, values), template)
    return configs


def params(cfg: Any) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


@pytest.fixture(scope="module")
def trt_t5() -> dict[str, Any]:
    return filled("t5", "trt", decoupled=False)


@pytest.mark.parametrize(("family", "decoupled"), KINDS)
def test_trt_configs_match_the_table(family: str, decoupled: bool) -> None:  # noqa: FBT001 - parametrized
    configs = filled(family, "trt", decoupled=decoupled)
    assert sorted(configs) == sorted(llm_layout.MODEL_NAMES)
    for name, cfg in configs.items():
        assert parity.problems(name, cfg) == [], name
    backend = params(configs["tensorrt_llm"])
    assert backend["tokenizer_dir"] == str(REPO / "preprocessing/1/tokenizer")
    assert (backend["xgrammar_tokenizer_info_path"], backend["guided_decoding_backend"]) == ("", "")
    assert params(configs["postprocessing"])["tokenizer_dir"] == str(REPO / "postprocessing/1/tokenizer")
    assert configs["tensorrt_llm"].model_transaction_policy.decoupled is decoupled
    assert configs["tensorrt_llm_bls"].model_transaction_policy.decoupled is decoupled


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_cpu_stand_in_keeps_the_same_tensor_contract(family: str) -> None:
    cpu, trt = filled(family, "cpu", decoupled=True), filled(family, "trt", decoupled=True)
    table = parity.table()
    for name, cfg in cpu.items():
        assert parity.tensor_problems(name, cfg, table["models"][name], table["not_offered"].get(name, {})) == [], name
        assert [str(t) for t in cfg.input] == [str(t) for t in trt[name].input], name
        assert [str(t) for t in cfg.output] == [str(t) for t in trt[name].output], name
    # cpu configs name no absolute path: where the checkout lies does not reach them.
    assert not any(str(REPO) in v for cfg in cpu.values() for v in params(cfg).values())


def test_the_pinned_names_replace_the_pre_1_0_ones(trt_t5: dict[str, Any]) -> None:
    for name in ("ensemble", "tensorrt_llm_bls", "tensorrt_llm"):
        inputs = {t.name for t in trt_t5[name].input}
        outputs = {t.name for t in trt_t5[name].output}
        assert {"min_tokens", "seed", "return_num_input_tokens", "return_num_output_tokens"} <= inputs, name
        assert {"num_input_tokens", "num_output_tokens"} <= outputs, name
        assert not {"min_length", "random_seed"} & inputs, name
    step = trt_t5["ensemble"].ensemble_scheduling.step[1]
    assert (step.input_map["min_tokens"], step.input_map["seed"]) == ("min_tokens", "seed")
    assert dict(step.output_map)["num_output_tokens"] == "num_output_tokens"


def test_what_the_bench_sends_is_declared_by_the_ensemble(trt_t5: dict[str, Any], tmp_path: Path) -> None:
    declared = {t.name for t in trt_t5["ensemble"].input}
    bench = {"output_tokens": 8, "ignore_eos": True}
    sent = workload.llm_inputs(workload.Prompt("hi", 1), bench, streaming=True)
    assert "min_tokens" in sent
    assert set(sent) <= declared
    argv = perftools.genai_perf_argv(Path("genai-perf"), make_run(tmp_path, streaming=True), **genai_kwargs(tmp_path, ignore_eos=True))
    extra = flag(argv, "--extra-inputs").split(":")[0]
    assert extra in declared


def test_the_repository_root_rewrite_moves_the_tokenizer_dir_with_the_engine_paths(tmp_path: Path) -> None:
    # The config stage fills paths under the marker root; the repo stage (and promote, pull) point them at the real place.
    variant, dest = tmp_path / "repos/m@tp2", tmp_path / "repos/m"
    values = llm_layout.template_values("m", _triton(), _engine(), "trt", repository.REPOSITORY_MARKER, {"is_encoder_decoder": False})
    for model in llm_layout.llm_models("trt", tokenizer_files=[], hf_files=[]):
        config.render_model(model, values, variant)
    assert repo.rewrite_paths(variant, repository.REPOSITORY_MARKER, dest) == 3  # tensorrt_llm, preprocessing, postprocessing
    text = (variant / "tensorrt_llm/config.pbtxt").read_text()
    backend = params(config.parse(text, variant))
    assert (backend["tokenizer_dir"], backend["gpt_model_path"]) == (f"{dest}/preprocessing/1/tokenizer", f"{dest}/tensorrt_llm/1/engine")
    assert str(repository.REPOSITORY_MARKER) not in text


def _triton() -> dict[str, Any]:
    return dict(schema.load_model(Path(__file__).parents[2] / "models/gpt2-medium.yaml").block("triton"))


def _engine() -> dict[str, Any]:
    return {"max_beam_width": 1, "max_input_len": 64, "max_output_len": 16}


# ------------------------------------------------------------------------------ the table itself


def test_table_names_its_source_and_what_it_is_not() -> None:
    table = parity.table()
    assert table["version"] == "1.2.1"
    assert "NOT proven identical to release/1.2.1" in table["note"]
    for name, model in table["models"].items():
        source = model["source"]
        assert source["repository"] == "NVIDIA/TensorRT-LLM"
        assert source["path"] == f"triton_backend/all_models/inflight_batcher_llm/{name}/config.pbtxt"
        assert len(source["commit"]) == 40
        assert len(model["git_blob_sha1"]) == 40
    logits = next(t for t in table["models"]["tensorrt_llm"]["outputs"] if t["name"] == "generation_logits")
    assert (logits["data_type"], logits["resolves_to"]) == ("${logits_datatype}", "TYPE_FP32")
    assert set(table["models"]["tensorrt_llm"]["parameters"]["required"]) == {
        "gpt_model_type", "tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend"
    }  # fmt: skip


def test_every_not_offered_tensor_has_a_one_line_reason() -> None:
    table = parity.table()
    reasons = [r for model in table["not_offered"].values() for d in model.values() for r in d.values()]
    assert len(reasons) > 100
    assert all(r.strip() and "\n" not in r and len(r) < 200 for r in reasons)
    lora = table["not_offered"]["tensorrt_llm"]["inputs"]["lora_weights"]
    assert "LoRA" in lora


# ------------------------------------------------------------------------------ the checker can fail


def _mutated(change: Any) -> dict[str, Any]:
    table = copy.deepcopy(parity.table())
    change(table)
    return table


def _row(table: dict[str, Any], model: str, direction: str, name: str) -> dict[str, Any]:
    return next(t for t in table["models"][model][direction] if t["name"] == name)


def test_a_required_key_the_config_lacks_fails(trt_t5: dict[str, Any]) -> None:
    table = _mutated(lambda t: t["models"]["tensorrt_llm"]["parameters"]["required"].update(recv_poll_period_ms="newly unguarded"))
    assert parity.problems("tensorrt_llm", trt_t5["tensorrt_llm"], table) == [
        "tensorrt_llm: parameters has no 'recv_poll_period_ms' (read with no guard: newly unguarded)"
    ]
    stripped = copy.deepcopy(trt_t5["tensorrt_llm"])
    del stripped.parameters["tokenizer_dir"]
    stripped.parameters["gpt_model_type"].string_value = "inflight"
    found = parity.problems("tensorrt_llm", stripped)
    assert len(found) == 2
    assert found[0].startswith("tensorrt_llm: parameters has no 'tokenizer_dir'")
    assert found[1].startswith("tensorrt_llm: parameter 'gpt_model_type' is 'inflight', expected one of")


def test_a_renamed_or_dropped_tensor_fails(trt_t5: dict[str, Any]) -> None:
    renamed = _mutated(lambda t: _row(t, "ensemble", "inputs", "min_tokens").update(name="min_length"))
    assert parity.problems("ensemble", trt_t5["ensemble"], renamed) == [
        "ensemble input min_tokens: not in the table",
        "ensemble input min_length: in the table, not declared, and no not-offered reason",
    ]

    def drop(t: dict[str, Any]) -> None:
        t["models"]["tensorrt_llm"]["outputs"] = [r for r in t["models"]["tensorrt_llm"]["outputs"] if r["name"] != "num_output_tokens"]

    assert parity.problems("tensorrt_llm", trt_t5["tensorrt_llm"], _mutated(drop)) == [
        "tensorrt_llm output num_output_tokens: not in the table"
    ]


def test_a_different_type_dims_or_optional_flag_fails(trt_t5: dict[str, Any]) -> None:
    def change(t: dict[str, Any]) -> None:
        _row(t, "tensorrt_llm", "inputs", "seed").update(data_type="TYPE_INT64")
        _row(t, "tensorrt_llm", "inputs", "stop_words_list").update(dims=[-1])
        _row(t, "tensorrt_llm", "inputs", "request_output_len").update(optional=True)

    assert sorted(parity.problems("tensorrt_llm", trt_t5["tensorrt_llm"], _mutated(change))) == [
        "tensorrt_llm input request_output_len: optional is False, the table says True",
        "tensorrt_llm input seed: data_type is TYPE_UINT64, the table says TYPE_INT64",
        "tensorrt_llm input stop_words_list: dims is [2, -1], the table says [-1]",
    ]


def test_the_not_offered_list_must_be_complete_and_true(trt_t5: dict[str, Any]) -> None:
    def change(t: dict[str, Any]) -> None:
        bls = t["not_offered"]["tensorrt_llm_bls"]["inputs"]
        bls["lora_weights"] = " "
        bls["seed"] = "claimed missing but declared"
        bls["image_tensor"] = "no such tensor upstream"

    assert sorted(parity.problems("tensorrt_llm_bls", trt_t5["tensorrt_llm_bls"], _mutated(change))) == [
        "tensorrt_llm_bls input image_tensor: listed as not offered but not in the table",
        "tensorrt_llm_bls input lora_weights: in the table, not declared, and no not-offered reason",
        "tensorrt_llm_bls input seed: declared, yet listed as not offered",
    ]
