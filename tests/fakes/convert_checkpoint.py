#!/usr/bin/env python3
"""Test double for TensorRT-LLM's examples/models/core/<family>/convert_checkpoint.py.

Only tests put it where the kit looks (a temporary examples/ tree of symlinks to this file).  It takes
each family's command line (enc_dec: --model_type t5 --model_dir --output_dir --tp_size --pp_size
--dtype; gpt, llama: --model_dir --output_dir --dtype; gemma: --ckpt-type hf --model-dir
--output-model-dir --world-size --dtype) and writes a checkpoint of the real shape: the project's own
converter's output, which is what NVIDIA's writes for these families.
FAKE_CONVERT_PERTURB: a family (t5, gpt2, llama, gemma) whose first tensor (by name) gets +0.01 after
conversion, so a test can see the kit catch a value that differs.
FAKE_CONVERT_LOG: file to append the argv (JSON lines) to.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout whose tasks package converts

from safetensors.numpy import load_file, save_file

from tasks.families.converters import Settings, converter


def options(argv: list[str]) -> dict[str, str]:
    """``--name value`` and ``--name-with-hyphens value`` pairs; a switch gets an empty value."""
    values: dict[str, str] = {}
    name = None
    for item in argv:
        if item.startswith("--"):
            name = item[2:].replace("-", "_")
            values[name] = ""
        elif name is not None:
            values[name] = item
    return values


if os.environ.get("FAKE_CONVERT_LOG"):
    with Path(os.environ["FAKE_CONVERT_LOG"]).open("a") as log:
        log.write(json.dumps([str(Path(sys.argv[0]).parent.name), *sys.argv[1:]]) + "\n")
args = options(sys.argv[1:])
source = Path(args["model_dir"])
out = Path(args.get("output_dir") or args["output_model_dir"])
if "model_type" in args:
    family = args["model_type"]
elif "ckpt_type" in args:
    family = "gemma"
else:
    family = json.loads((source / "config.json").read_text())["model_type"]
converter(family, "fake convert_checkpoint.py")(source, out, Settings(args["dtype"], 1, 1), "fake convert_checkpoint.py")
if os.environ.get("FAKE_CONVERT_PERTURB") == family:
    rank = min(out.rglob("rank0.safetensors"))
    tensors = load_file(rank)
    first = min(tensors)
    tensors[first] = tensors[first] + 0.01
    save_file(tensors, rank)
print(f"[TensorRT-LLM] fake convert_checkpoint.py: {family} -> {out}")
