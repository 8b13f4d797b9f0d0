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

from tasks import layout
from tasks.errors import UserError
from tasks.stage import StageContext

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


def hidden_size(hf_dir: Path) -> int:
    data = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    size = data.get("hidden_size")
    if not isinstance(size, int):
        raise UserError(str(hf_dir / "config.json"), "no integer hidden_size: not an encoder checkpoint this stage knows")
    return size


def values(ctx: StageContext, models: list[layout.TritonModel]) -> dict[str, object]:
    triton = ctx.params["triton"]
    target = ctx.params["target"]
    return {
        "name": ctx.params["name"],
        "tokenizer_model": models[1].name,
        "encoder_model": models[2].name,
        "max_batch_size": triton["max_batch_size"],
        "instance_count": triton["instance_count"],
        "max_queue_delay_us": triton["max_queue_delay_us"],
        "max_seq_len": ctx.params["engine"]["max_seq_len"],
        "hidden_size": hidden_size(ctx.inputs["hf"]),
        "instance_kind": "KIND_GPU" if target == "trt" else "KIND_CPU",
    }


def render_model(model: layout.TritonModel, filled: Mapping[str, object], out: Path) -> None:
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
    from tasks import llm_layout  # noqa: PLC0415 - only LLM repositories need it

    params = ctx.params
    hf_config = json.loads((ctx.inputs["hf"] / "config.json").read_text(encoding="utf-8"))
    repo_dir = Path(params.get("repo_dir") or Path("repos", params["name"]).resolve())
    return llm_layout.template_values(params["name"], params["triton"], params["engine"], params["target"], repo_dir, hf_config)


def action(ctx: StageContext) -> None:
    params = ctx.params
    models = layout.triton_models(params["kind"], params["name"], params["target"], ctx.inputs["hf"])
    filled = values(ctx, models) if params["kind"] == "encoder" else llm_values(ctx)
    for model in models:
        render_model(model, filled, ctx.out)
    log.info("config: %d Triton model configs filled and parsed", len(models))
