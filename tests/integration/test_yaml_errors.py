"""Mistakes in model files: one line naming file, key and what is expected; exit 3; nothing deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TINY_YAML, copy_project, run_doit

F = "models/tiny.yaml"
CASES = [
    (
        "engine:\n  max_batch_size: 8",
        "engine:\n  max_batch_size: x",
        f"{F}: engine.max_batch_size: expected an integer between 1 and 16384, got 'x'",
    ),
    (
        "engine:\n  max_batch_size: 8",
        "engine:\n  max_batch_size: 0",
        f"{F}: engine.max_batch_size: expected an integer between 1 and 16384, got 0",
    ),
    (
        "engine:\n  max_batch_size: 8",
        "engine:\n  max_batch_size: true",
        f"{F}: engine.max_batch_size: expected an integer between 1 and 16384, got True",
    ),
    ("  max_seq_len: 32\n", "", f"{F}: engine.max_seq_len: required key is missing"),
    ("  max_seq_len: 32\n", "  max_seq_len: 32\n  max_sequence: 9\n", f"{F}: engine.max_sequence: unknown key (known: max_batch_size,"),
    (
        "  max_seq_len: 32\n",
        "  max_seq_len: 100\n",
        f"{F}: engine.max_seq_len: expected <= 64 (max_position_embeddings of the checkpoint), got 100",
    ),
    (
        "  max_seq_len: 32\n",
        "  max_seq_len: 32\n  opt_seq_len: 40\n",
        f"{F}: engine.opt_seq_len: expected an integer <= engine.max_seq_len (32), got 40",
    ),
    (
        "  max_seq_len: 32\n",
        "  max_seq_len: 32\n  precision: int4\n",
        f"{F}: engine.precision: expected one of fp32, fp16, bf16, int8, best, got 'int4'",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 16",
        f"{F}: triton.max_batch_size: expected <= engine.max_batch_size (8), got 16",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\n  instance_count: -1",
        f"{F}: triton.instance_count: expected an integer between 1 and 256, got -1",
    ),
    ("name: tiny", "name: other", f"{F}: name: must equal the file name 'tiny', got 'other'"),
    ("kind: encoder", "kind: ensemble", f"{F}: family: an ensemble has no family; its members (members:) have one"),
    ("kind: encoder", "kind: llm", f"{F}: family: family 'bert' is not implemented yet for kind llm (implemented: t5, gpt2, llama, gemma)"),
    ("kind: encoder", "kind: decoder", f"{F}: kind: expected one of encoder, llm, ensemble, got 'decoder'"),
    (
        "family: bert",
        "family: clap",
        f"{F}: family: family 'clap' is not implemented yet for kind encoder (implemented: bert, clip-vision, clip-text)",
    ),
    ("family: bert", "family: clip-vision", f"{F}: engine.max_seq_len: unknown key (known: max_batch_size, opt_batch_size, precision,"),
    ("export:\n  opset: 18", "export:\n  opset: 18\nmembers:\n  text: tiny", f"{F}: members: only a kind: ensemble model has members"),
    ("export:\n  opset: 18", "export:\n  opset: 18\nindex:\n  member: text", f"{F}: index: only a kind: ensemble model has an index"),
    ("source:\n  path:", "source:\n  pip: nope-not-installed\n  path:", f"{F}: source: expected exactly one of"),
    ("source:\n  path: ", "source:\n  hf: google/flan-t5-small\n  oops: ", f"{F}: source.oops: unknown key for a hf source"),
    ("source:\n  path: ", "source:\n  hf: ", f"{F}: source.revision: required: a commit sha, or a branch written explicitly"),
    ("source:\n  path: ", "source:\n  path: /does/not/exist\n  x: ", f"{F}: source.x: unknown key for a path source"),
    ("export:\n  opset: 18", "export:\n  opset: 18\n  pooling: max", f"{F}: export.pooling: expected one of mean, cls, got 'max'"),
    ("export:\n  opset: 18", "export:\n  opset: 9", f"{F}: export.opset: expected an integer between 17 and 23, got 9"),
    ("export:\n  opset: 18", "convert:\n  dtype: float16\nexport:\n  opset: 18", f"{F}: convert: encoders are exported to ONNX"),
    (
        "export:\n  opset: 18",
        "sweep:\n  engine.max_batch_size: [8, 16]\nexport:\n  opset: 18",
        f"{F}: sweep.engine.max_batch_size: engine.max_batch_size is also set in engine:; write it in one place",
    ),
    (
        "export:\n  opset: 18",
        "sweep:\n  engine.max_batch: [8]\nexport:\n  opset: 18",
        f"{F}: sweep.engine.max_batch: unknown key (known in engine: max_batch_size,",
    ),
    (
        "export:\n  opset: 18",
        "sweep:\n  bench.concurrency: [1]\nexport:\n  opset: 18",
        f"{F}: sweep.bench.concurrency: expected a dotted path into one of this model's blocks (export, engine, triton)",
    ),
    (
        "export:\n  opset: 18",
        "sweep:\n  triton.instance_count: []\nexport:\n  opset: 18",
        f"{F}: sweep.triton.instance_count: expected a non-empty list",
    ),
    (
        "export:\n  opset: 18",
        "sweep:\n  triton.instance_count: [1, 1]\nexport:\n  opset: 18",
        f"{F}: sweep.triton.instance_count: expected each value once",
    ),
    (
        "export:\n  opset: 18",
        "sweep:\n  engine.precision: [fp32, 'f p16']\nexport:\n  opset: 18",
        f"{F}: sweep.engine.precision: expected numbers, true/false, null or words of 1-64 of [A-Za-z0-9._+]",
    ),
    (
        "export:\n  opset: 18",
        "sweep:\n  triton.instance_count: [1, 0]\nexport:\n  opset: 18",
        f"{F}: triton.instance_count: expected an integer between 1 and 256, got 0 (in the sweep point tiny@instance_count-0)",
    ),
    (
        "export:\n  opset: 18",
        "sweep:\n  triton.instance_count: [1, 2]\ncompare:\n  maximize: Inferences/Second\nexport:\n  opset: 18",
        f"{F}: compare: needs a bench: block",
    ),
    ("export:\n  opset: 18", "compare:\n  maximize: Inferences/Second\nexport:\n  opset: 18", f"{F}: compare: only used with sweep:"),
    (
        "export:\n  opset: 18",
        "sweep:\n  triton.instance_count: [1, 2]\nbench:\n  concurrency: [1]\ncompare:\n  limits: {p99: 5}\nexport:\n  opset: 18",
        f"{F}: compare.limits.p99: unknown column (known: Inferences/Second,",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  concurrency: [0]",
        f"{F}: bench.concurrency.0: expected an integer between 1 and 4096, got 0",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  concurrency: [1, 4, 1]",
        f"{F}: bench.concurrency: expected each value once, got [1, 4, 1]",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  input_tokens: 33",
        f"{F}: bench.input_tokens: expected <= engine.max_seq_len (32), got 33",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  batch_size: 9",
        f"{F}: bench.batch_size: expected <= triton.max_batch_size (8), got 9",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  tool: genai-perf",
        f"{F}: bench.tool: expected one of auto, builtin, perf_analyzer, got 'genai-perf'",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  output_tokens: 8",
        f"{F}: bench.output_tokens: unknown key (known: concurrency, tool,",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  prompts: prompts.txt",
        f"{F}: bench.prompts: no such file: models/prompts.txt (one prompt per line; relative to the model file)",
    ),
    (
        "export:\n  opset: 18",
        "export:\n  opset: 18\nbench:\n  stability_percentage: 0",
        f"{F}: bench.stability_percentage: expected a number > 0 and <= 100, got 0",
    ),
    ("export:\n  opset: 18", "export:\n  opset: 18\nservers: 2", f"{F}: servers: unknown key (known: name, kind, family"),
    ("name: tiny", "name: tiny\nname: tiny", f"{F}: line 2: not valid YAML: duplicate key 'name'"),
    ("engine:\n  max_batch_size: 8", "engine:\n  max_batch_size: [8", f"{F}: line "),
    (
        "  max_seq_len: 32\n",
        "  max_seq_len: 32\n  flags: {weightStreaming: true}\n",
        f"{F}: engine.flags.weightStreaming: not a trtexec flag in TensorRT 10.14 (table trtexec-10.14.json); the flag is allowWeightStreaming",
    ),
    (
        "  max_seq_len: 32\n",
        "  max_seq_len: 32\n  flags: {optProfileIndex: 0}\n",
        f"{F}: engine.flags.optProfileIndex: not a trtexec flag in TensorRT 10.14 (table trtexec-10.14.json); the flag is useProfile",
    ),
    (
        "  max_seq_len: 32\n",
        "  max_seq_len: 32\n  flags: {allowWeightStreaming: true}\n",
        f"{F}: engine.flags.allowWeightStreaming: needs stronglyTyped: true in the same flags",
    ),
]


@pytest.fixture
def project(tiny_bert: Path, tmp_path: Path) -> Path:
    root = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    (root / "repos/tiny/tiny").mkdir(parents=True)
    (root / "repos/tiny/tiny/config.pbtxt").write_text("kept\n")
    return root


@pytest.mark.parametrize(("old", "new", "message"), CASES, ids=[c[2].split(": ")[1] + f"-{i}" for i, c in enumerate(CASES)])
def test_bad_model_file_is_one_line_and_exit_3(project: Path, old: str, new: str, message: str) -> None:
    path = project / F
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    result = run_doit(project, "build:tiny", "target=cpu")
    assert result.rc == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ERROR: {message}"), lines[0]
    assert "Traceback" not in result.stderr
    assert (project / "repos/tiny/tiny/config.pbtxt").read_text() == "kept\n"
    assert not (project / "build/tiny").exists()


def test_trtexec_10_14_flags_load(project: Path) -> None:
    """Flags of the 10.14 parser load, a deprecated one included; streaming needs strong typing and has it here."""
    flags = "{useProfile: 0, plugins: libx.so, allowWeightStreaming: true, stronglyTyped: true, weightStreamingBudget: 50%}"
    path = project / F
    path.write_text(path.read_text().replace("  max_seq_len: 32\n", f"  max_seq_len: 32\n  flags: {flags}\n", 1))
    result = run_doit(project, "list", "target=cpu")
    assert result.rc == 0, result.stderr
    assert "ERROR" not in result.stderr


def test_bad_target_and_log_level(project: Path) -> None:
    result = run_doit(project, "build:tiny", "target=gpu")
    assert result.rc == 3
    assert result.stderr.strip() == "ERROR: target: expected one of auto, cpu, trt, got 'gpu'"


def test_missing_pip_package_names_the_fix(project: Path) -> None:
    path = project / F
    text = path.read_text()
    start = text.index("source:")
    end = text.index("export:")
    path.write_text(text[:start] + "source:\n  pip: no-such-model-package\n" + text[end:])
    result = run_doit(project, "list")
    assert result.rc == 3
    expected = f"ERROR: {F}: source.pip: package 'no-such-model-package' is not installed; run: pip install no-such-model-package"
    assert result.stderr.strip() == expected


T5 = "models/t5.yaml"
T5_YAML = """\
name: t5
kind: llm
family: t5
source:
  hf: google/flan-t5-small
  revision: e48659520aaf0069046c3413e9835d214fefa83c
convert:
  dtype: float16
engine:
  max_batch_size: 8
  max_input_len: 64
  max_output_len: 16
triton:
  max_batch_size: 8
"""
LLM_CASES = [
    ("dtype: float16", "dtype: float16\n  pp_size: 2", f"{T5}: convert.pp_size: expected 1 for encoder-decoder models"),
    ("dtype: float16", "dtype: int8", f"{T5}: convert.dtype: expected one of float16, bfloat16, float32, got 'int8'"),
    ("  max_output_len: 16\n", "", f"{T5}: engine.max_output_len: required key is missing"),
    (
        "max_output_len: 16\n",
        "max_output_len: 16\n  flags: {max_output_len: 200}\n",
        f"{T5}: engine.flags.max_output_len: removed in TensorRT-LLM 0.12 (deprecated in 0.11); use max_seq_len",
    ),
    (
        "max_output_len: 16\n",
        "max_output_len: 16\n  flags: {context_fmha: enable}\n",
        f"{T5}: engine.flags.context_fmha: T5 requires context_fmha disable",
    ),
    (
        "max_output_len: 16\n",
        "max_output_len: 16\n  decoder_flags: {fooBar: 1}\n",
        f"{T5}: engine.decoder_flags.fooBar: not a trtllm-build flag in TensorRT-LLM 1.2.1",
    ),
    (
        "max_output_len: 16\n",
        "max_output_len: 16\n  flags: {streamingllm: enable}\n",
        f"{T5}: engine.flags.streamingllm: streamingllm enable is refused: trtllm-build of TensorRT-LLM 1.x still lists the flag",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 16",
        f"{T5}: triton.max_batch_size: expected <= engine.max_batch_size (8), got 16",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\n  kv_cache_free_gpu_mem_fraction: 1.5",
        f"{T5}: triton.kv_cache_free_gpu_mem_fraction: expected a number in (0, 1], got 1.5",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\n  decoupled: yes please",
        f"{T5}: triton.decoupled: expected true or false",
    ),
    ("convert:\n", "export:\n  opset: 18\nconvert:\n", f"{T5}: export: LLM checkpoints are converted (convert:), not exported to ONNX"),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\nbench:\n  output_tokens: 17",
        f"{T5}: bench.output_tokens: expected <= engine.max_output_len (16), got 17",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\nbench:\n  input_tokens: 65",
        f"{T5}: bench.input_tokens: expected <= engine.max_input_len (64), got 65",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\nbench:\n  model: tensorrt_llm",
        f"{T5}: bench.model: expected one of ensemble, tensorrt_llm_bls, got 'tensorrt_llm'",
    ),
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\nbench:\n  batch_size: 2",
        f"{T5}: bench.batch_size: unknown key (known: concurrency, tool,",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), LLM_CASES, ids=[c[2].split(": ")[1] + f"-{i}" for i, c in enumerate(LLM_CASES)])
def test_bad_llm_model_file_is_one_line_and_exit_3(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in T5_YAML
    root = copy_project(tmp_path / "p", {"t5": T5_YAML.replace(old, new, 1)})
    result = run_doit(root, "build:t5", "target=cpu")
    assert result.rc == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ERROR: {message}"), lines[0]
    assert not (root / "build").exists() or not (root / "build/t5").exists()


DECODER_CASES = [
    (
        "triton:\n  max_batch_size: 8",
        "triton:\n  max_batch_size: 8\n  gpus: [0, 1]",
        "triton.gpus: expected tp_size x pp_size = 1 GPU indices (one per rank), got 2: [0, 1]",
    ),
    (
        "max_output_len: 16\n",
        "max_output_len: 16\n  encoder_flags: {log_level: info}\n",
        "engine.encoder_flags: only for encoder-decoder models (family t5)",
    ),
    (
        "max_output_len: 16\n",
        "max_output_len: 16\n  flags: {kv_cache_type: continuous}\n",
        "engine.flags.kv_cache_type: Triton's tensorrt_llm backend requires kv_cache_type paged",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), DECODER_CASES, ids=[c[2].split(":")[0] for c in DECODER_CASES])
def test_bad_decoder_only_model_file_is_one_line_and_exit_3(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = T5_YAML.replace("name: t5", "name: llama").replace("family: t5", "family: llama").replace(old, new, 1)
    root = copy_project(tmp_path / "p", {"llama": text})
    result = run_doit(root, "build:llama", "target=cpu")
    assert result.rc == 3
    assert result.stderr.strip().splitlines() == [
        f"ERROR: models/llama.yaml: {message}" + result.stderr.split(message, 1)[1].splitlines()[0]
    ]
    # pipeline parallelism is fine for decoder-only families
    ok = (
        T5_YAML.replace("name: t5", "name: llama")
        .replace("family: t5", "family: llama")
        .replace("dtype: float16", "dtype: float16\n  pp_size: 2")
    )
    (root / "models/llama.yaml").write_text(ok)
    assert run_doit(root, "list", "target=cpu").rc == 0


V = "models/vlm.yaml"
VLM = "name: vlm\nkind: ensemble\nmembers:\n  text: tiny\ntriton:\n  max_batch_size: 8\n"
ENSEMBLE_CASES = [
    (
        "text: tiny",
        "image: tiny",
        f"{V}: members.image: expected an image encoder (family clip-vision), but models/tiny.yaml is kind encoder",
    ),
    ("text: tiny", "text: nope", f"{V}: members.text: no model file nope.yaml in the same folder"),
    ("members:\n  text: tiny", "members: {}", f"{V}: members: expected at least one of image, text"),
    ("members:\n  text: tiny", "members:\n  text: tiny\n  audio: x", f"{V}: members.audio: unknown key (known: image, text)"),
    ("max_batch_size: 8", "max_batch_size: 16", f"{V}: triton.max_batch_size: expected <= triton.max_batch_size of tiny (8)"),
    ("kind: ensemble", "kind: ensemble\nbench:\n  concurrency: [1]", f"{V}: bench: benchmarks of an ensemble are not implemented yet"),
    ("kind: ensemble", "kind: ensemble\nengine: {}", f"{V}: engine: an ensemble is built from its members' artifacts"),
    ("kind: ensemble", "kind: ensemble\nsource:\n  path: x", f"{V}: source: an ensemble has no checkpoint"),
    ("kind: ensemble", "kind: ensemble\nsweep:\n  triton.instance_count: [1, 2]", f"{V}: sweep: an ensemble is built from its members'"),
    (
        "kind: ensemble",
        "kind: ensemble\nindex:\n  member: image\n  corpus: c.txt",
        f"{V}: index.member: expected a role named in members: (text)",
    ),
    ("kind: ensemble", "kind: ensemble\nindex:\n  member: text", f"{V}: index.corpus: required key is missing"),
    ("kind: ensemble", "kind: ensemble\nindex:\n  member: text\n  corpus: c.txt", f"{V}: index.corpus: cannot read models/c.txt"),
    (
        "kind: ensemble",
        "kind: ensemble\nindex:\n  member: text\n  corpus: c.txt\n  batch_size: 9",
        f"{V}: index.batch_size: expected <= triton.max_batch_size (8), got 9",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), ENSEMBLE_CASES, ids=[c[2].split(": ")[1] for c in ENSEMBLE_CASES])
def test_bad_ensemble_file_is_one_line_and_exit_3(project: Path, old: str, new: str, message: str) -> None:
    assert old in VLM
    (project / V).write_text(VLM.replace(old, new, 1))
    result = run_doit(project, "build:vlm", "target=cpu")
    assert result.rc == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ERROR: {message}"), lines[0]
    assert not (project / "build/tiny").exists()


def test_a_command_naming_one_model_does_not_read_the_others(project: Path) -> None:
    (project / V).write_text(VLM.replace("text: tiny", "text: nosuchmodel", 1))
    built = run_doit(project, "build:tiny", "target=cpu")
    assert built.rc == 0, built.stderr
    listed = run_doit(project, "list")  # every model: the broken ensemble is named
    assert listed.rc == 3
    assert listed.stderr.strip().splitlines() == [f"ERROR: {V}: members.text: no model file nosuchmodel.yaml in the same folder"]


def test_a_swept_member_is_one_of_its_variants_named_in_full(project: Path) -> None:
    tiny = project / "models/tiny.yaml"
    tiny.write_text(
        tiny.read_text().replace(
            "triton:\n  max_batch_size: 8\n", "triton:\n  max_batch_size: 8\nsweep:\n  triton.instance_count: [1, 2]\n"
        )
    )
    (project / V).write_text(VLM)
    result = run_doit(project, "build:vlm", "target=cpu")
    assert result.rc == 3
    expected = (
        f"ERROR: {V}: members.text: models/tiny.yaml has a sweep: name one of its variants (tiny@instance_count-1, tiny@instance_count-2)"
    )
    assert result.stderr.strip().splitlines() == [expected]
    (project / V).write_text(VLM.replace("text: tiny", "text: tiny@instance_count-3"))
    assert "members.text: models/tiny.yaml has a sweep: name one of its variants" in run_doit(project, "list", "target=cpu").stderr
    (project / V).write_text(VLM.replace("text: tiny", "text: tiny@instance_count-2"))
    built = run_doit(project, "build:vlm", "target=cpu")
    assert built.rc == 0, built.stdout + built.stderr
    # The variant's own config (two instances) is what the ensemble's repository serves; the export is shared.
    assert built.executed == {"fetch:tiny", "export:tiny", "engine:tiny", "config:tiny@instance_count-2", "config:vlm", "repo:vlm"}
    encoder = (project / "repos/vlm/tiny_encoder/config.pbtxt").read_text()
    assert "count: 2" in encoder
