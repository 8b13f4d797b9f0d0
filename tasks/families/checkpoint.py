"""A checkpoint is of the model file's family, and every weight the family reads comes from it.

Without these checks transformers builds whatever ``config.json`` names (a GPT-2 config under
``family: bert`` loads as a randomly initialised BERT) and fills every weight the files lack
with random values, with nothing but a log table to say so; that model would be exported,
checked against itself and served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tasks.core.errors import UserError
from tasks.families import weights

# family -> model_type -> the class-name prefix of its ``architectures`` entries.
MODEL_TYPES: dict[str, dict[str, str]] = {
    # Encoders whose forward takes input_ids, attention_mask and token_type_ids, as the bert wrapper calls it.
    "bert": {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta"},
    "clip-vision": {"clip": "CLIP", "clip_vision_model": "CLIP"},
    "clip-text": {"clip": "CLIP", "clip_text_model": "CLIP"},
    "t5": {"t5": "T5"},
    "gpt2": {"gpt2": "GPT2"},
    "llama": {"llama": "Llama"},
    "gemma": {"gemma": "Gemma"},
}
_SHOWN = 3  # names listed in a message before "and N more"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."  # noqa: PLR2004 - a readable line


def listed(names: Iterable[str]) -> str:
    """``a, b, c and 4 more``: a message stays one readable line however many names there are."""
    items = sorted(names)
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def check_family(config: Mapping[str, Any], family: str, path: Path, where: str) -> None:
    """``model_type`` and every ``architectures`` entry of ``config.json`` belong to ``family``."""
    expected = MODEL_TYPES.get(family)
    if expected is None:
        return
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in expected:
        wanted = " or ".join(repr(t) for t in expected)
        raise UserError(where, f"{path}: model_type is {_short(model_type)}; family {family} expects model_type {wanted}")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        raise UserError(where, f"{path}: architectures is {_short(architectures)}; expected a list of class names")
    prefix = expected[model_type]
    wrong = [str(a) for a in architectures if not str(a).startswith(prefix)]
    if wrong:
        found = f"architectures {_short(wrong)} under model_type {model_type!r}"
        raise UserError(where, f"{path}: {found}; family {family} expects {prefix}* classes")


def _weight_files_shown(folder: Path) -> str:
    files = weights.weight_files(p for p in folder.iterdir() if p.is_file())
    return ", ".join(str(p) for p in files[:_SHOWN]) if files else str(folder)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _mismatch(item: Any, folder: Path) -> str:  # noqa: ANN401 - transformers' loading report entry
    # transformers reports (name, checkpoint shape, model shape) per mismatched weight.
    if isinstance(item, tuple) and len(item) == 3:  # noqa: PLR2004
        name, found, wanted = item
        return f"{_weight_files_shown(folder)}: tensor {name} has shape {list(found)}, config.json implies {list(wanted)}"
    return f"{_weight_files_shown(folder)}: tensor {item} does not have the shape config.json implies"


def load_pretrained(cls: Any, folder: Path, unused: tuple[str, ...] = ()) -> Any:  # noqa: ANN401 - a transformers model class
    """``cls.from_pretrained(folder)`` that refuses any weight transformers would initialise at random.

    ``unused``: prefixes of weights the caller never reads (BERT's pooler), which may be absent.
    """
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UserError("", f"{folder}: transformers cannot load the checkpoint ({_first_line(exc)})") from None
    mismatched = sorted(info.get("mismatched_keys") or (), key=str)
    if mismatched:
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise UserError("", _mismatch(mismatched[0], folder) + more)
    missing = [k for k in info.get("missing_keys") or () if not k.startswith(unused)]
    if missing:
        raise UserError(
            "", f"{_weight_files_shown(folder)}: no tensor {listed(missing)} ({len(missing)} weights of {cls.__name__} would be random)"
        )
    return model
