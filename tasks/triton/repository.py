"""What a Triton model directory is made of: its template folder and the artifacts linked into it.

The vocabulary both layouts (encoder: ``layout``, LLM: ``llm_layout``) build on, so neither imports the other's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
# Configs that need the repository's absolute path (TensorRT-LLM engine paths) are filled with this
# root; the repo stage (and promote) rewrite it to where the repository is.  So no cached stage's
# params or outputs hold the checkout's path, and two checkouts agree on every action key.
REPOSITORY_MARKER = Path("/__tritongraph_repository__")


@dataclass(frozen=True)
class Artifact:
    """A file or directory tree taken from an upstream stage's output into a Triton model directory."""

    role: str  # which upstream stage: "engine", "hf", ...
    source: str  # path inside that stage's output (a directory is linked file by file)
    dest: str  # path inside the Triton model directory
    required: bool = True


@dataclass(frozen=True)
class TritonModel:
    name: str
    template: str  # folder under tasks/templates
    artifacts: tuple[Artifact, ...] = ()
    empty_dirs: tuple[str, ...] = ()

    @property
    def template_dir(self) -> Path:
        return TEMPLATES / self.template


def template_files(models: list[TritonModel]) -> list[Path]:
    """Every template file the config stage reads (its raw-file inputs)."""
    return sorted(p for m in models for p in m.template_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
