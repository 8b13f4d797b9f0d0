"""A function named by module and qualified name, imported when first called.

A graph snapshot names every stage's action this way: a ``doit list`` that reuses the snapshot
then imports none of the stage modules (and nothing they import: onnx, numpy, Triton clients);
only the stages that actually run import theirs.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyFunction:
    __slots__ = ("_function", "module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname
        self._function: Any = None

    def resolve(self) -> Any:  # noqa: ANN401 - whatever the named function is
        if self._function is None:
            found: Any = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                found = getattr(found, part)
            self._function = found
        return self._function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - forwards any call
        return self.resolve()(*args, **kwargs)

    def __reduce__(self) -> tuple[type[LazyFunction], tuple[str, str]]:
        return LazyFunction, (self.module, self.qualname)

    def __repr__(self) -> str:
        return f"{self.module}.{self.qualname}"
