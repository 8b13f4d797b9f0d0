# ruff: noqa: T201, INP001 - a measurement script run by path: its printed lines are the report
"""Measure the T5 converter against ``cp`` on a flan-t5-large-sized checkpoint (random fp32 weights, ~3 GB).

    python scripts/bench_convert.py [folder] [--dtype float16] [--tp 1] [--repeat 3] [--keep]

The random checkpoint is written once, tensor by tensor, into ``folder`` (default
``build/bench/flan-t5-large-random``) and reused by later runs.  Each run then converts it
in a child process (wall time, MB/s of source read, the child's peak RSS from
VmHWM, the peak of its own address space) and copies the same files with ``cp`` on the same disk,
alternating ``--repeat`` times; medians are reported.
Both read the source from a warm page cache (it was just written or read); each is timed
alone and including the ``sync`` that puts its writes on disk, with earlier writes flushed
before it starts, so neither pays for the other's writeback.  Outputs are deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tasks.families.converters.safetensors_stream import Planned, write_safetensors

DEFAULT_FOLDER = Path("build/bench/flan-t5-large-random")
# google/flan-t5-large's config.json (the keys the converter reads).
FLAN_T5_LARGE: dict[str, Any] = {
    "architectures": ["T5ForConditionalGeneration"],
    "model_type": "t5",
    "d_model": 1024,
    "d_kv": 64,
    "d_ff": 2816,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "num_heads": 16,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "tie_word_embeddings": False,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "n_positions": 512,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
# Each child reports VmHWM, the peak of its own address space after exec: getrusage's ru_maxrss
# (RUSAGE_CHILDREN or RUSAGE_SELF) also keeps the parent's high-water mark from before the exec.
PEAK = "import re; print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024)"
CHILD = f"""
import json, logging, sys
from pathlib import Path
from tasks.families.converters import Settings, t5
logging.basicConfig(level=logging.INFO, format="  %(message)s")
result = t5.convert(Path(sys.argv[1]), Path(sys.argv[2]), Settings(sys.argv[3], int(sys.argv[4]), 1), "bench")
print(json.dumps(result.__dict__))
{PEAK}
"""
IMPORT_ONLY = f"import tasks.families.converters.t5\n{PEAK}\n"
MB = 1e6


def hf_shapes(cfg: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Names and shapes of an HF gated T5 checkpoint with an untied lm_head."""
    d, inner, ff, vocab = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"], cfg["vocab_size"]
    yield "shared.weight", (vocab, d)
    for component, layers in (("encoder", cfg["num_layers"]), ("decoder", cfg["num_decoder_layers"])):
        attentions = ["layer.0.SelfAttention"] + (["layer.1.EncDecAttention"] if component == "decoder" else [])
        ffn = 2 if component == "decoder" else 1
        for i in range(layers):
            block = f"{component}.block.{i}"
            for attn in attentions:
                yield from ((f"{block}.{attn}.{p}.weight", (inner, d)) for p in "qkv")
                yield f"{block}.{attn}.o.weight", (d, inner)
            if i == 0:
                yield (
                    f"{block}.layer.0.SelfAttention.relative_attention_bias.weight",
                    (cfg["relative_attention_num_buckets"], cfg["num_heads"]),
                )
            yield from ((f"{block}.layer.{n}.layer_norm.weight", (d,)) for n in range(ffn + 1))
            yield f"{block}.layer.{ffn}.DenseReluDense.wi_0.weight", (ff, d)
            yield f"{block}.layer.{ffn}.DenseReluDense.wi_1.weight", (ff, d)
            yield f"{block}.layer.{ffn}.DenseReluDense.wo.weight", (d, ff)
        yield f"{component}.final_layer_norm.weight", (d,)
    yield "lm_head.weight", (vocab, d)


def ensure_checkpoint(folder: Path) -> None:
    """Write the random checkpoint once; the weights file appears (renamed) only when complete."""
    weights = folder / "model.safetensors"
    if weights.is_file():
        print(f"checkpoint: reusing {weights} ({weights.stat().st_size / MB:.0f} MB)")
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(FLAN_T5_LARGE, indent=2) + "\n", encoding="utf-8")
    generator = torch.Generator().manual_seed(0)

    def random(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.05

    plan = [Planned(name, shape, torch.float32, lambda s=shape: random(s)) for name, shape in hf_shapes(FLAN_T5_LARGE)]  # type: ignore[misc]
    started = time.monotonic()
    size = write_safetensors(weights, plan, metadata={"format": "pt"})
    print(f"checkpoint: wrote {weights} ({size / MB:.0f} MB, {len(plan)} tensors) in {time.monotonic() - started:.1f} s")


@dataclass(frozen=True)
class Timing:
    seconds: float  # the command alone: its writes may still sit in the page cache
    synced: float  # the command plus the sync that puts its writes on disk
    stdout: str


def timed(argv: list[str]) -> Timing:
    # Flush earlier writes first (untimed): otherwise whichever step runs second pays for the first one's writeback.
    os.sync()
    started = time.monotonic()
    run = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    os.sync()
    return Timing(seconds, time.monotonic() - started, run.stdout)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_mb(stdout: str) -> float:
    """The child's own peak RSS, printed as its last line."""
    return int(stdout.strip().splitlines()[-1]) / MB


@dataclass
class Runs:
    convert: list[Timing] = field(default_factory=list)
    cp: list[Timing] = field(default_factory=list)

    def median(self, which: str, attr: str) -> float:
        return float(statistics.median(getattr(t, attr) for t in getattr(self, which)))

    def ratio(self, attr: str) -> float:
        return float(statistics.median(getattr(a, attr) / getattr(b, attr) for a, b in zip(self.convert, self.cp, strict=True)))


def run_once(source: Path, converted: Path, copied: Path, args: argparse.Namespace, runs: Runs) -> None:
    for stale in (converted, copied):
        shutil.rmtree(stale, ignore_errors=True)
    runs.convert.append(timed([sys.executable, "-c", CHILD, str(source), str(converted), args.dtype, str(args.tp)]))
    copied.mkdir(parents=True)
    runs.cp.append(timed(["cp", *(str(p) for p in sorted(source.iterdir())), str(copied)]))


def report(source: Path, args: argparse.Namespace, runs: Runs, peaks: tuple[float, float]) -> None:
    source_mb = du(source) / MB
    largest = max(math.prod(shape) * 4 for _, shape in hf_shapes(FLAN_T5_LARGE)) / MB
    written = json.loads(runs.convert[-1].stdout.strip().splitlines()[-2])["target_bytes"] / MB
    conv, cp = runs.median("convert", "seconds"), runs.median("cp", "seconds")
    print(f"source:   {source_mb:.0f} MB fp32 ({source}); medians of {len(runs.cp)} alternating runs")
    print(f"convert:  {args.dtype}, tp {args.tp}: {written:.0f} MB written")
    print(f"          {conv:.1f} s ({source_mb / conv:.0f} MB/s of source), {runs.median('convert', 'synced'):.1f} s to disk")
    print(f"          peak RSS {peaks[1]:.0f} MB; a child that only imports torch + the converter: {peaks[0]:.0f} MB")
    print(f"          (largest source tensor {largest:.0f} MB, checkpoint {source_mb:.0f} MB)")
    print(f"cp:       {cp:.1f} s ({source_mb / cp:.0f} MB/s), {runs.median('cp', 'synced'):.1f} s to disk")
    print(f"ratio:    convert / cp = {runs.ratio('seconds'):.2f} (page cache), {runs.ratio('synced'):.2f} (to disk)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--dtype", default="float16", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="alternating convert / cp runs (medians are reported)")
    parser.add_argument("--keep", action="store_true", help="keep the converted and copied outputs")
    args = parser.parse_args()
    source: Path = args.folder
    ensure_checkpoint(source)
    converted, copied = source.parent / f"{source.name}.trtllm-{args.dtype}-tp{args.tp}", source.parent / f"{source.name}.cp"
    baseline = subprocess.run([sys.executable, "-c", IMPORT_ONLY], check=True, stdout=subprocess.PIPE, text=True)
    runs = Runs()
    for _ in range(max(args.repeat, 1)):
        run_once(source, converted, copied, args, runs)
    report(source, args, runs, (peak_mb(baseline.stdout), max(peak_mb(t.stdout) for t in runs.convert)))
    if not args.keep:
        for done in (converted, copied):
            shutil.rmtree(done, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
