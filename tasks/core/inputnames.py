"""Names of a stage's input files that do not depend on where the checkout or the packages are.

They enter action keys: two checkouts at different paths, or two machines with different
site-packages, must compute the same key for the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def input_names(paths: Sequence[Path]) -> list[str]:
    """Names of input files that do not depend on where the checkout is.

    A file inside the project is named by its relative path; one outside it (a pip
    package's checkpoint, a local model folder) by ``external:`` and its path below the
    deepest folder all of this stage's outside files share.  Two checkouts at different
    paths, or two machines with different site-packages, so compute the same action key.
    """
    root = Path.cwd().resolve()
    absolute = [p if p.is_absolute() else root / p for p in paths]
    outside = [p for p in absolute if not _owned(p, root)]
    base = Path(os.path.commonpath(outside)) if outside else root
    if len(outside) == 1:
        base = outside[0].parent
    return [f"external:{p.relative_to(base).as_posix()}" if p in outside else p.relative_to(root).as_posix() for p in absolute]


def _owned(path: Path, root: Path) -> bool:
    """Inside the project and not in an installed package.

    A virtualenv inside the checkout (``.venv/lib/.../site-packages``) then names its files as one
    elsewhere does, so the keys agree.
    """
    return path.is_relative_to(root) and "site-packages" not in path.relative_to(root).parts
