"""Bounded model files: every number has a range naming its key, messages stay short, YAML cannot explode.

Each case is (model file text, text the one-line error must contain); add a row to cover a new key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import UserError
from tasks.spec import schema, sweep

ENC = """\
name: m
kind: encoder
family: bert
source:
  path: ckpt
engine:
  max_batch_size: 8
  max_seq_len: 32
triton:
  max_batch_size: 8
"""
LLM = """\
name: m
kind: llm
family: gpt2
source:
  path: ckpt
engine:
  max_batch_size: 8
  max_input_len: 64
  max_output_len: 16
triton:
  max_batch_size: 8
"""
ENSEMBLE = "name: m\nkind: ensemble\nmembers:\n  text: tiny\ntriton:\n  max_batch_size: 8\n"
LONG = "a" * 5000


def enc(old: str, new: str) -> str:
    assert old in ENC
    return ENC.replace(old, new, 1)


def llm(old: str, new: str) -> str:
    assert old in LLM
    return LLM.replace(old, new, 1)


def bench(line: str, base: str = ENC) -> str:
    return f"{base}bench:\n  {line}\n"


BATCH = "  max_batch_size: 8\n  max_seq_len"
BOUNDED = [
    (
        enc(BATCH, "  max_batch_size: 100000000000000000000\n  max_seq_len"),
        "engine.max_batch_size: expected an integer between 1 and 16384",
    ),
    (enc(BATCH, "  max_batch_size: 1.0e+20\n  max_seq_len"), "engine.max_batch_size: expected an integer between 1 and 16384, got 1e+20"),
    (enc(BATCH, "  max_batch_size: true\n  max_seq_len"), "engine.max_batch_size: expected an integer between 1 and 16384, got True"),
    (enc(BATCH, "  max_batch_size: 16385\n  max_seq_len"), "engine.max_batch_size: expected an integer between 1 and 16384, got 16385"),
    (enc(BATCH, "  max_batch_size: 0\n  max_seq_len"), "engine.max_batch_size: expected an integer between 1 and 16384, got 0"),
    (enc("max_seq_len: 32", "max_seq_len: 32\n  opt_batch_size: 20000"), "engine.opt_batch_size: expected an integer between 1 and 16384"),
    (enc("max_seq_len: 32", "max_seq_len: 2000000"), "engine.max_seq_len: expected an integer between 1 and 1048576"),
    (enc("max_seq_len: 32", "max_seq_len: 32\n  opt_seq_len: 2000000"), "engine.opt_seq_len: expected an integer between 1 and 1048576"),
    (enc("max_seq_len: 32", "max_seq_len: 32\n  workspace_mb: 2000000"), "engine.workspace_mb: expected an integer between 1 and 1048576"),
    (enc("max_seq_len: 32", "max_seq_len: 32\n  flags: {tacticSources: .inf}"), "engine.flags.tacticSources: expected a string"),
    (enc("max_seq_len: 32", "max_seq_len: 32\n  flags: {minTiming: 100000000000000000000}"), "engine.flags.minTiming: expected a string"),
    (
        enc("max_seq_len: 32", f"max_seq_len: 32\n  extra_args: [{', '.join(['x'] * 300)}]"),
        "engine.extra_args: expected a list of at most 256",
    ),
    (enc("max_seq_len: 32", f"max_seq_len: 32\n  extra_args: [{LONG}]"), "engine.extra_args.0: expected at most 4096 characters"),
    (ENC + "  instance_count: 100000\n", "triton.instance_count: expected an integer between 1 and 256, got 100000"),
    (ENC + "  max_queue_delay_us: 100000000\n", "triton.max_queue_delay_us: expected an integer between 0 and 10000000"),
    (
        ENC.replace("triton:\n  max_batch_size: 8", "triton:\n  max_batch_size: 99999"),
        "triton.max_batch_size: expected an integer between 1",
    ),
    (bench("measurement_interval_ms: 2000000000"), "bench.measurement_interval_ms: expected an integer between 50 and 600000"),
    (bench("max_trials: 1000"), "bench.max_trials: expected an integer between 3 and 100"),
    (bench("warmup_requests: 10000000"), "bench.warmup_requests: expected an integer between 0 and 100000"),
    (bench("request_timeout_s: 86400"), "bench.request_timeout_s: expected an integer between 1 and 3600"),
    (bench("num_prompts: 10000000"), "bench.num_prompts: expected an integer between 1 and 100000"),
    (bench("input_tokens: 2000000"), "bench.input_tokens: expected an integer between 1 and 1048576"),
    (bench("seed: 5000000000"), "bench.seed: expected an integer between 0 and 4294967295"),
    (bench("batch_size: 20000"), "bench.batch_size: expected an integer between 1 and 16384"),
    (bench("concurrency: [1, 100000]"), "bench.concurrency.1: expected an integer between 1 and 4096, got 100000"),
    (bench(f"concurrency: [{', '.join(map(str, range(1, 302)))}]"), "bench.concurrency: expected a list of 1 to 256 integers"),
    (bench("stability_percentage: 1000"), "bench.stability_percentage: expected a number > 0 and <= 100, got 1000"),
    (bench("stability_percentage: .nan"), "bench.stability_percentage: expected a number > 0 and <= 100, got nan"),
    (llm("max_batch_size: 8\n  max_input_len", "max_batch_size: 8\n  max_beam_width: 5000\n  max_input_len"), "engine.max_beam_width"),
    (llm("max_input_len: 64", "max_input_len: 10000000"), "engine.max_input_len: expected an integer between 1 and 1048576"),
    (llm("max_output_len: 16", "max_output_len: 10000000"), "engine.max_output_len: expected an integer between 1 and 1048576"),
    (llm("max_output_len: 16", "max_output_len: 16\n  max_num_tokens: 2000000000000"), "engine.max_num_tokens: expected an integer"),
    (LLM + "  max_tokens_in_paged_kv_cache: 2000000000000\n", "triton.max_tokens_in_paged_kv_cache: expected an integer between 1"),
    (LLM + "  kv_cache_free_gpu_mem_fraction: .nan\n", "triton.kv_cache_free_gpu_mem_fraction: expected a number in (0, 1], got nan"),
    (LLM + "  gpus: [0, 100000]\n", "triton.gpus.1: expected an integer between 0 and 255"),
    (LLM + "  instance_count: 100000\n", "triton.instance_count: expected an integer between 1 and 256"),
    (LLM + "convert:\n  tp_size: 1000\n", "convert.tp_size: expected an integer between 1 and 256, got 1000"),
    (LLM + "convert:\n  pp_size: 1000\n", "convert.pp_size: expected an integer between 1 and 256, got 1000"),
    (bench("output_tokens: 10000000", LLM), "bench.output_tokens: expected an integer between 1 and 1048576"),
    (
        ENC + "sweep:\n  triton.instance_count: [1, 2]\nbench:\n  concurrency: [1]\ncompare:\n  limits: {p99 latency: .inf}\n",
        "compare.limits.p99 latency: expected a number > 0 and <= 1e+15, got inf",
    ),
]
LONG_VALUES = [
    (enc("path: ckpt", f"path: {LONG}"), "source.path: expected at most 4096 characters, got 'aaaa"),
    (enc("path: ckpt", f"path: /tmp/{'a' * 300}/x"), "source.path: expected a path whose every part is at most 255 bytes"),
    (enc("path: ckpt", 'path: "ck\\0pt"'), "source.path: expected a path whose every part is at most 255 bytes"),
    (enc("path: ckpt", f"hf: {LONG}\n  revision: main"), "source.hf: expected at most 4096 characters"),
    (bench(f"prompts: {LONG}"), "bench.prompts: expected at most 4096 characters"),
    (bench(f"prompts: {'p' * 300}.txt"), "bench.prompts: expected a path whose every part is at most 255 bytes"),
    (bench(f"tool: {LONG}"), "bench.tool: expected one of auto, builtin, perf_analyzer, got 'aaaa"),
    (ENC + f"? {LONG}\n: 1\n", "models/m.yaml: aaaa"),
    (enc("name: m", f"name: {LONG}"), "name: expected at most 4096 characters"),
    (enc("family: bert", f"family: {LONG}"), "family: expected at most 4096 characters"),
    (enc("  max_batch_size: 8\n  max_seq_len", f"  max_batch_size: {LONG}\n  max_seq_len"), "engine.max_batch_size: expected an integer"),
    (enc("max_seq_len: 32", f"max_seq_len: 32\n  precision: {LONG}"), "engine.precision: expected one of"),
    (ENC + f"sweep:\n  engine.precision: [fp16, {'b' * 100}]\n", "sweep.engine.precision: expected numbers, true/false, null or words"),
    (ENC + f"sweep:\n  ? triton.{LONG}\n  : [1]\n", "sweep.triton.aaaa"),
    (enc("max_seq_len: 32", f"max_seq_len: {'9' * 5000}"), "not valid YAML: Exceeds the limit"),
]


def load(tmp_path: Path, text: str) -> UserError:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(text, encoding="utf-8")
    (folder / "tiny.yaml").write_text(ENC.replace("name: m", "name: tiny"), encoding="utf-8")
    with pytest.raises(UserError) as caught:
        schema.load_models(folder)
    return caught.value


def assert_short_line(error: UserError, expected: str) -> None:
    message = str(error)
    assert expected in message, message[:400]
    assert "\n" not in message
    # The file's path is the test's temporary folder; what follows it is what the user's value can lengthen.
    said = message.split("models/", 1)[-1]
    assert len(said) <= 300, f"{len(said)} characters: {said[:300]}"


@pytest.mark.parametrize(("text", "expected"), BOUNDED, ids=[c[1].split(":")[0] + f"-{i}" for i, c in enumerate(BOUNDED)])
def test_every_number_is_bounded_and_named(tmp_path: Path, text: str, expected: str) -> None:
    assert_short_line(load(tmp_path, text), f"models/m.yaml: {expected}")


@pytest.mark.parametrize(("text", "expected"), LONG_VALUES, ids=[c[1].split(":")[0][:30] + f"-{i}" for i, c in enumerate(LONG_VALUES)])
def test_long_values_give_one_short_line(tmp_path: Path, text: str, expected: str) -> None:
    assert_short_line(load(tmp_path, text), expected)


ENSEMBLE_BOUNDED = [
    (ENSEMBLE + "  instance_count: 100000\n", "triton.instance_count: expected an integer between 1 and 256"),
    (ENSEMBLE + "index:\n  member: text\n  corpus: c.txt\n  top_k: 100000\n", "index.top_k: expected an integer between 1 and 1000"),
    (ENSEMBLE + "index:\n  member: text\n  corpus: c.txt\n  batch_size: 100000\n", "index.batch_size: expected an integer between 1"),
    (ENSEMBLE + f"index:\n  member: text\n  corpus: {LONG}\n", "index.corpus: expected at most 4096 characters"),
]


@pytest.mark.parametrize(("text", "expected"), ENSEMBLE_BOUNDED, ids=[c[1].split(":")[0] for c in ENSEMBLE_BOUNDED])
def test_ensemble_numbers_are_bounded(tmp_path: Path, text: str, expected: str) -> None:
    assert_short_line(load(tmp_path, text), f"models/m.yaml: {expected}")


def test_values_inside_the_bounds_load(tmp_path: Path) -> None:
    """The upper bounds themselves are accepted: the ranges are what docs/models.md says."""
    text = llm("max_output_len: 16", "max_output_len: 1048576\n  max_beam_width: 1024") + "  instance_count: 256\n"
    text += "bench:\n  measurement_interval_ms: 600000\n  concurrency: [1, 4096]\n  stability_percentage: 100\n"
    (tmp_path / "m.yaml").write_text(text.replace("max_batch_size: 8", "max_batch_size: 16384"), encoding="utf-8")
    spec = schema.load_model(tmp_path / "m.yaml")
    assert spec.block("engine")["max_batch_size"] == 16384
    assert spec.block("bench")["measurement_interval_ms"] == 600000


def sweep_file(sizes: tuple[int, ...]) -> str:
    keys = ("engine.max_batch_size", "triton.instance_count", "triton.max_queue_delay_us")
    axes = "".join(f"  {key}: [{', '.join(str(v) for v in range(1, n + 1))}]\n" for key, n in zip(keys, sizes, strict=False))
    return (
        ENC.replace("  max_batch_size: 8\n  max_seq_len", "  max_seq_len").replace("triton:\n  max_batch_size: 8\n", "") + "sweep:\n" + axes
    )


def test_a_huge_sweep_is_refused_before_it_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object) -> list[sweep.Point]:
        raise AssertionError("the sweep was expanded")

    monkeypatch.setattr(sweep, "points", never)
    error = load(tmp_path, sweep_file((80, 70, 100)))
    assert_short_line(error, "models/m.yaml: sweep: expands to 560,000 variants (80 x 70 x 100 values); at most 256")


def test_a_sweep_of_256_variants_loads(tmp_path: Path) -> None:
    text = sweep_file((16, 16)).replace("max_seq_len: 32\n", "max_seq_len: 32\ntriton:\n  max_batch_size: 1\n", 1)
    (tmp_path / "m.yaml").write_text(text.replace("sweep:\n  engine.max_batch_size", "sweep:\n  engine.opt_batch_size"), encoding="utf-8")
    text = (tmp_path / "m.yaml").read_text()
    text = text.replace("  max_seq_len: 32\n", "  max_seq_len: 32\n  max_batch_size: 16\n", 1)
    (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
    assert len(schema.load_model(tmp_path / "m.yaml").variants) == 256


def bomb(depth: int) -> str:
    levels = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return enc("  max_batch_size: 8\n", f"  max_batch_size: [{', '.join(levels)}]\n")


@pytest.mark.parametrize("depth", [5, 9, 30])
def test_an_alias_bomb_is_refused_before_it_is_formatted(tmp_path: Path, depth: int) -> None:
    assert len(bomb(depth).encode()) < 2000
    error = load(tmp_path, bomb(depth))
    assert_short_line(error, "models/m.yaml: anchors and aliases (&name / *name) expand this file to more than 10,000 values")


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    error = load(tmp_path, enc("  max_batch_size: 8\n", "  max_batch_size: &loop [1, *loop]\n"))
    assert_short_line(error, "models/m.yaml: line 7: an alias refers to the value that contains it")


def test_a_few_aliases_still_share_values(tmp_path: Path) -> None:
    text = ENC.replace("max_batch_size: 8\n  max_seq_len", "max_batch_size: &batch 8\n  max_seq_len")
    (tmp_path / "m.yaml").write_text(text.replace("triton:\n  max_batch_size: 8", "triton:\n  max_batch_size: *batch"), encoding="utf-8")
    assert schema.load_model(tmp_path / "m.yaml").block("triton")["max_batch_size"] == 8


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    error = load(tmp_path, enc("  max_batch_size: 8\n", f"  max_batch_size: {'[' * 5000}{']' * 5000}\n"))
    assert_short_line(error, "models/m.yaml: not valid YAML: nested too deeply")


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.yaml").write_bytes(ENC.encode().replace(b"kind: encoder", b"kind: encod\xe9r"))
    with pytest.raises(UserError) as caught:
        schema.load_models(folder)
    assert_short_line(caught.value, "models/m.yaml: line 2: not UTF-8 text (byte 0xe9 at offset 19)")


def model_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(ENC.replace("name: m", f"name: {name.split('.')[0]}"), encoding="utf-8")
    return folder


def test_the_same_model_in_yaml_and_yml_names_both_files(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "bad.yaml", "bad.yml", "ok.yaml")
    with pytest.raises(UserError) as caught:
        schema.load_models(folder)
    assert_short_line(caught.value, f"{folder.as_posix()}/bad.yaml, {folder.as_posix()}/bad.yml: both define model bad")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BAD.YAML", "BAD.YAML: the suffix must be lower-case .yaml or .yml; rename it to BAD.yaml"),
        ("bad.Yml", "bad.Yml: the suffix must be lower-case .yaml or .yml; rename it to bad.yml"),
        ("My Model.yaml", "My Model.yaml: the file name is the model name: expected [a-z0-9][a-z0-9._-]*"),
        ("_x.yaml", "_x.yaml: the file name is the model name"),
    ],
)
def test_a_near_miss_file_name_is_refused_not_skipped(tmp_path: Path, name: str, expected: str) -> None:
    folder = model_folder(tmp_path, "ok.yaml", name)
    with pytest.raises(UserError) as caught:
        schema.load_models(folder)
    assert_short_line(caught.value, f"{folder.as_posix()}/{expected}")


def test_hidden_and_other_files_are_not_model_files(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "ok.yaml", "ok.yml.bak", "notes.txt")
    (folder / ".#ok.yaml").write_text("an editor's lock file", encoding="utf-8")
    assert [spec.name for spec in schema.load_models(folder)] == ["ok"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x" * 5000, "'" + "x" * 120 + "'… (5,000 chars)"),
        ([1, 4, 1], "[1, 4, 1]"),
        (10**2000, "an integer of about 2,000 digits"),
        (True, "True"),
    ],
)
def test_shown_cuts_long_values(value: object, expected: str) -> None:
    from tasks.core.errors import shown  # imported here: the rest of the file also runs where it does not exist yet

    assert shown(value) == expected


def test_shown_never_walks_a_whole_alias_bomb() -> None:
    from tasks.core.errors import shown

    value: list[object] = ["lol"] * 9
    for _ in range(40):  # 9**40 leaves: formatting it in full could never finish
        value = [value] * 9
    assert len(shown(value)) <= 125
