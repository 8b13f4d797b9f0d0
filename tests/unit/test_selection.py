"""doit command lines naming models load only those (and an ensemble's members); anything else loads every model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import UserError, YamlError
from tasks.spec.schema import load_models
from tasks.stages.selection import named_models

BASENAMES = frozenset({"fetch", "export", "engine", "config", "repo", "bench", "build", "serve", "promote", "publish", "pull"})
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "models"),
    [
        (["build:minilm"], {"minilm"}),
        (["build:minilm", "target=cpu"], {"minilm"}),
        (["run", "engine:minilm", "bench:flan-t5"], {"minilm", "flan-t5"}),
        (["info", "engine:minilm"], {"minilm"}),
        (["-n", "2", "build:minilm"], {"minilm"}),
        (["--reporter=json", "-a", "build:minilm"], {"minilm"}),
        (["promote:flan-t5@max_batch_size-8"], {"flan-t5"}),
        (["serve:vlm", "address=0.0.0.0"], {"vlm"}),
    ],
)
def test_a_command_naming_model_tasks_names_those_models(argv: list[str], models: set[str]) -> None:
    assert named_models(argv, BASENAMES) == frozenset(models)


@pytest.mark.parametrize(
    "argv",
    [
        [],  # the default task: build, every model
        ["build"],
        ["engine", "build:minilm"],
        ["list"],
        ["list", "build:minilm"],
        ["target=cpu"],
        ["plan", "json=plan.json"],
        ["conformance"],
        ["--unknown-option", "build:minilm"],
        ["build:"],
        ["dumpdb"],
    ],
)
def test_anything_else_is_every_model(argv: list[str]) -> None:
    assert named_models(argv, BASENAMES) is None


def test_only_loads_the_named_models_and_an_ensembles_members() -> None:
    loaded = load_models(ROOT / "models", frozenset({"vlm"}))
    assert sorted(s.name for s in loaded) == ["clip-vision", "minilm", "vlm"]
    assert [s.name for s in load_models(ROOT / "models", frozenset({"minilm"}))] == ["minilm"]
    assert load_models(ROOT / "models", frozenset({"no-such-model"})) == []


def test_only_does_not_read_the_other_model_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "minilm.yaml").write_text((ROOT / "models" / "minilm.yaml").read_text())
    (models / "broken.yaml").write_text("name: broken\nkind: [\n")
    assert [s.name for s in load_models(models, frozenset({"minilm"}))] == ["minilm"]
    with pytest.raises(YamlError, match=r"broken\.yaml"):
        load_models(models)


def test_two_files_for_one_model_are_refused_whichever_is_named(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("minilm.yaml", "other.yaml", "other.yml"):
        (models / name).write_text((ROOT / "models" / "minilm.yaml").read_text().replace("name: minilm", f"name: {Path(name).stem}"))
    with pytest.raises(UserError, match=r"other\.yaml, .*other\.yml"):
        load_models(models, frozenset({"minilm"}))
