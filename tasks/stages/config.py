"""config: the project's pbtxt templates filled, each result parsed by Triton's ModelConfig proto.

Unlike ``fill_template.py`` (string.Template.safe_substitute, which leaves unknown
placeholders in place for the server to trip over), a placeholder without a value
or any ``${`` left after filling is an error naming the template and the key.
"""

from __future__ import annotations

import json
import logging
import shutil
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.families import encoders
from tasks.families.converters import read_checkpoint_config
from tasks.spec.modelspec import ModelSpec
from tasks.stages import fetch
from tasks.stages.graph import ModelGraph, rel
from tasks.triton import layout, repository

log = logging.getLogger(__name__)

CODE_VERSION = "1"


def fill(template: Path, values: Mapping[str, object]) -> str:
    """Substitute ``${name}`` placeholders; every placeholder must have a value."""
    source = template.read_text(encoding="utf-8")
    try:
        result = string.Template(source).substitute(values)
    except KeyError as exc:
        raise UserError(str(template), f"placeholder ${{{exc.args[0]}}} has no value (known: {', '.join(sorted(values))})") from None
    except ValueError as exc:
        raise UserError(str(template), f"malformed placeholder: {exc}") from None
    if "${" in result:
        raise UserError(str(template), "a '${' is left after filling")
    return result


def parse(text: str, template: Path) -> Any:  # noqa: ANN401 - generated protobuf class
    """Parse with Triton's own ModelConfig message; errors carry line and column."""
    # Imported here: tritonclient.grpc costs ~85 ms, and every doit command (list, info) loads this module.
    from google.protobuf import text_format  # noqa: PLC0415
    from tritonclient.grpc import model_config_pb2  # noqa: PLC0415

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise UserError(str(template), f"filled config is not a valid Triton ModelConfig: {exc}") from None
    return config


def _maps(kind: str, names: list[str]) -> str:
    return " ".join(f'{kind} {{ key: "{n}" value: "{n}" }}' for n in names)


def check_output_size(hf_dir: Path, expected: int) -> None:
    """The checkpoint's preprocessor crops (or resizes) to the square the vision tower takes."""
    path = hf_dir / layout.PREPROCESSOR_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(str(path), f"cannot read the image preprocessor config: {exc}") from None
    key = "crop_size" if data.get("do_center_crop") else "size"
    size = data.get(key)
    size = {"height": size, "width": size} if isinstance(size, int) else size
    if not isinstance(size, dict) or not isinstance(size.get("height"), int) or not isinstance(size.get("width"), int):
        raise UserError(str(path), f"{key}: expected height and width (a fixed-size image for the encoder), got {data.get(key)!r}")
    if (size["height"], size["width"]) != (expected, expected):
        msg = f"{key} is {size['height']}x{size['width']} but the vision tower takes {expected}x{expected} images"
        raise UserError(str(path), msg)


def modality_values(family: str, hf_dir: Path, hf_config: Mapping[str, Any], engine: Mapping[str, Any]) -> dict[str, object]:
    """What differs between a text encoder (tokenizer in front) and an image encoder (preprocessing in front)."""
    if encoders.family(family).modality == "image":
        size = encoders.image_size(hf_config)
        check_output_size(hf_dir, size)
        return {"modality": "image", "crop_height": size, "crop_width": size}
    return {"modality": "text", "max_seq_len": engine["max_seq_len"]}


def values(ctx: StageContext, models: list[repository.TritonModel]) -> dict[str, object]:
    triton, params = ctx.params["triton"], ctx.params
    hf_config = read_checkpoint_config(ctx.inputs["hf"], ctx.stage.task_name)
    signature = encoders.family(params["family"]).signature(hf_config)
    names = [t.name for t in signature.inputs]
    return {
        "name": params["name"],
        "front_model": models[1].name,
        "tokenizer_model": models[1].name,
        "preprocess_model": models[1].name,
        "encoder_model": models[2].name,
        "max_batch_size": triton["max_batch_size"],
        "instance_count": triton["instance_count"],
        "max_queue_delay_us": triton["max_queue_delay_us"],
        "instance_kind": "KIND_GPU" if params["target"] == "trt" else "KIND_CPU",
        "encoder_inputs": ",\n  ".join(t.pbtxt() for t in signature.inputs),
        "encoder_outputs": ",\n  ".join(t.pbtxt() for t in signature.outputs),
        "front_output_map": _maps("output_map", names),
        "encoder_input_map": _maps("input_map", names),
        "embedding_output": signature.embedding,
        "embedding_size": signature.embedding_size,
        **modality_values(params["family"], ctx.inputs["hf"], hf_config, params["engine"]),
    }


def render_model(model: repository.TritonModel, filled: Mapping[str, object], out: Path) -> None:
    """config.pbtxt filled and checked; other template files (python models) copied as they are."""
    dest = out / model.name
    for path in sorted(model.template_dir.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        target = dest / path.relative_to(model.template_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "config.pbtxt":
            text = fill(path, filled)
            config = parse(text, path)
            if config.name != model.name:
                raise UserError(str(path), f"name is {config.name!r}, expected {model.name!r}")
            target.write_text(text, encoding="utf-8")
        else:
            shutil.copyfile(path, target)


def llm_values(ctx: StageContext) -> dict[str, object]:
    from tasks.triton import llm_layout  # noqa: PLC0415 - only LLM repositories need it

    params = ctx.params
    hf_config = read_checkpoint_config(ctx.inputs["hf"], ctx.stage.task_name)
    root = repository.REPOSITORY_MARKER
    return llm_layout.template_values(params["name"], params["triton"], params["engine"], params["target"], root, hf_config)


def action(ctx: StageContext) -> None:
    params = ctx.params
    if params["kind"] == "ensemble":
        ensemble_action(ctx)
        return
    models = layout.triton_models(params["kind"], params["name"], params["target"], ctx.inputs["hf"], family=params.get("family", ""))
    filled = values(ctx, models) if params["kind"] == "encoder" else llm_values(ctx)
    for model in models:
        render_model(model, filled, ctx.out)
    log.info("config: %d Triton model configs filled and parsed", len(models))


def member_embedding_size(config_file: Path) -> int:
    """The ``embedding`` width a member's own ensemble declares (read from its filled config)."""
    parsed = parse(config_file.read_text(encoding="utf-8"), config_file)
    for output in parsed.output:
        if output.name == "embedding":
            return int(output.dims[-1])
    raise UserError(str(config_file), "no output named embedding: not an encoder ensemble")


def ensemble_values(ctx: StageContext) -> dict[str, object]:
    params = ctx.params
    inputs, outputs, routes = [], [], []
    for role, member in params["members"].items():
        size = member_embedding_size(ctx.inputs[role] / member / "config.pbtxt")
        inputs.append(f'{{ name: "{role}" data_type: TYPE_STRING dims: [ 1 ] optional: true }}')
        outputs.append(f'{{ name: "{role}_embedding" data_type: TYPE_FP32 dims: [ {size} ] }}')
        routes.append(f'parameters {{ key: "{role}_model" value: {{ string_value: "{member}" }} }}')
    search = params.get("index") or {"member": "", "top_k": 0}
    return {
        "name": params["name"],
        "max_batch_size": params["triton"]["max_batch_size"],
        "instance_count": params["triton"]["instance_count"],
        "inputs": ",\n  ".join(inputs),
        "outputs": ",\n  ".join(outputs),
        "routes": "\n".join(routes),
        "search_model": layout.search_model(params["name"]),
        "index_role": search["member"],
        "index_member": params["members"].get(search["member"], ""),
        "top_k": search["top_k"],
    }


def ensemble_action(ctx: StageContext) -> None:
    filled = ensemble_values(ctx)
    models = layout.ensemble_models(ctx.params["name"], "index" in ctx.params)
    for model in models:
        render_model(model, filled, ctx.out)
    log.info("config: %s over %s", ctx.params["name"], ", ".join(f"{r}: {m}" for r, m in ctx.params["members"].items()))


# The engine keys the LLM templates read (the rest only shape trtllm-build's argv).
LLM_CONFIG_ENGINE_KEYS = ("max_beam_width", "max_input_len", "max_output_len")


def encoder_reads(spec: ModelSpec) -> dict[str, Any]:
    """The triton block, and the engine's sequence limit the tokenizer truncates to (an image has none)."""
    return {"triton": spec.block("triton"), "engine": {k: v for k, v in spec.block("engine").items() if k == "max_seq_len"}}


def llm_reads(spec: ModelSpec) -> dict[str, Any]:
    return {"triton": spec.block("triton"), "engine": {k: spec.block("engine")[k] for k in LLM_CONFIG_ENGINE_KEYS}}


def stage(model: ModelGraph, deps: Mapping[str, Stage], reads: Mapping[str, Any]) -> Stage:
    """``config:<m>`` reads the blocks ``reads`` names, the model's name, kind, family and target, and the templates."""
    spec, target = model.spec, model.target
    models = layout.triton_models(spec.kind, spec.name, target, None, family=spec.family, searchable="index" in reads)
    templates = repository.template_files(models)
    params = {"name": spec.name, "kind": spec.kind, "family": spec.family, **reads, "target": target, "code": CODE_VERSION}
    doc = f"Triton configs of {spec.variant}"
    # A model's own checkpoint is read for its config.json (and an image's preprocessor config) alone.
    deps = {role: dep.only(fetch.CONFIG) if dep.name == "fetch" else dep for role, dep in deps.items()}
    return model.stage("config", params, action, doc, deps=deps, files=[rel(p) for p in templates], target=target)
