"""The loaded graph kept between invocations in ``build/.cache/graph/``, reused while nothing it came from changed.

Building the graph parses and validates every model file, reads checkpoint configs and package
metadata and computes every stage's params: milliseconds per model, seconds for a zoo, on every
``doit list``.  A snapshot is keyed by what the load cannot see through the file system (the
code version, the Python and doit versions, the target, the command's variables, the
environment variables the loaders read) and carries the stat signature of every file and
folder the load read (:mod:`tasks.core.observe`); one changed signature and the graph is built
afresh.  A load that asked the Hub over the network is never kept: a branch may move.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.core import fsops, hashing, observe
from tasks.core.lazy import LazyFunction
from tasks.stages.graph import BUILD, Graph
from tasks.tools import toolchain, versions

log = logging.getLogger("tasks")

FOLDER = BUILD / ".cache" / "graph"
FORMAT = 1
_RACY_NS = 50_000_000  # coarser than any file system's mtime clock
_DIGEST_MAX_BYTES = 1 << 20  # model files, configs, package metadata: hashed when only their stat changed
KEEP = 8  # snapshots kept (one per target and set of variables); the oldest go first
# Environment variables anything under graph loading reads (huggingface_hub's settings, the cache,
# the NGC image's release, PATH for tools); tests/unit/test_snapshot.py holds the code to this list.
ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TRITONGRAPH_", "NVIDIA_", "TRTLLM_", "PATH", "PYTHONPATH", "HOME", "XDG_")
_PACKAGE = Path(__file__).resolve().parents[1]
# The checkout's dodo.py beside the package, not the cwd's: doit may run it with -f from another
# folder (the conformance kit's projects do).
DODO = _PACKAGE.parent / "dodo.py"
_POSIX_PATH = type(Path())


def code_version() -> list[tuple[str, str]]:
    """Every file of the ``tasks`` package (templates, flag tables), ``dodo.py`` and the pinned versions by content.

    Through the stat cache: a stat each, and a hash only for a file whose stat changed (templates
    are also stage inputs, so a ``touch`` of every input touches them).
    """
    files = [path for path in (DODO, versions.VERSIONS_FILE) if path.exists()]
    for folder, dirs, names in os.walk(_PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files.extend(Path(folder, n) for n in sorted(names) if not n.endswith(".pyc"))
    return [(str(p), hashing.digest(p)) for p in files]


def environment(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIXES)}


def key(target: toolchain.Target, variables: Mapping[str, str], env: Mapping[str, str]) -> str:
    """What a fresh load depends on beyond the files it reads."""
    blob = {
        "format": FORMAT,
        "python": sys.version,
        "executable": sys.executable,
        "sys_path": sys.path[1:],  # [0] is doit's script folder, which varies with how it was started
        "doit": metadata.version("doit"),
        "cwd": str(Path.cwd().resolve()),
        "target": [target.name, target.reason],
        "driver": toolchain.driver_fingerprint(),
        "variables": dict(sorted(variables.items())),
        "env": environment(env),
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:32]


class _Pickler(pickle.Pickler):
    # Paths by their text, rebuilt once per distinct path: unpickling thousands of Path objects
    # one by one parses each again, which costs more than the rest of the snapshot.
    def persistent_id(self, obj: object) -> str | None:
        return str(obj) if type(obj) is _POSIX_PATH else None

    # The project's functions (stage actions) by name, imported when called: a reused snapshot
    # then imports no stage module, nor the libraries they import.
    def reducer_override(self, obj: object) -> Any:  # noqa: ANN401 - pickle's interface
        if isinstance(obj, types.FunctionType) and obj.__module__.startswith("tasks.") and "<" not in obj.__qualname__:
            return LazyFunction, (obj.__module__, obj.__qualname__)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.paths: dict[str, Path] = {}

    def persistent_load(self, pid: Any) -> Path:  # noqa: ANN401 - pickle's interface
        path = self.paths.get(pid)
        if path is None:
            path = self.paths[pid] = Path(pid)
        return path


Said = list[tuple[str, int, str]]  # (logger, level, message) a load logged


class _Listener(logging.Handler):
    """Keeps what the load tells the user (a deprecated flag, an unreachable Hub), to say it again on reuse."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.said: Said = []

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append((record.name, record.levelno, record.getMessage()))


def load(path: Path) -> tuple[Graph, Said] | None:
    """The snapshot at ``path`` if every file it was built from is unchanged, else None."""
    try:
        data = _Unpickler(path.read_bytes()).load()
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a snapshot of older code or a torn file: build afresh
        log.debug("graph snapshot %s unreadable (%s); loading the models", path, exc)
        return None
    if not isinstance(data.get("graph"), Graph):
        return None
    touched = _touched(data["paths"], data["digests"])
    if touched is None:
        return None
    if touched:  # same bytes, new stat: remember the new stat so the next run needs no hashing
        data["paths"] |= {p: observe.signature(p) for p in touched}
        _write(path, data)
    return data["graph"], data["said"]


def _touched(paths: dict[str, observe.Signature], digests: dict[str, str]) -> list[str] | None:
    """Recorded files whose stat changed but whose bytes did not (``touch``, a checkout); None if any really changed."""
    touched: list[str] = []
    for name, old in paths.items():
        now = observe.signature(name)
        if now == old:
            continue
        same = name in digests and now is not None and _content(name, now) == digests[name]
        if not same:
            log.debug("graph snapshot outdated: %s changed", name)
            return None
        touched.append(name)
    return touched


def _content(name: str, sig: tuple[int, int, int, bool]) -> str | None:
    """A small file's sha256 (through the stat cache doit's checker shares) or a folder's sorted listing's."""
    if sig[3]:
        try:
            return "listing:" + hashlib.sha256("\0".join(sorted(p.name for p in Path(name).iterdir())).encode()).hexdigest()
        except OSError:
            return None
    return hashing.digest(Path(name)) if sig[1] <= _DIGEST_MAX_BYTES else None


def _digests(paths: Mapping[str, observe.Signature]) -> dict[str, str]:
    """Contents of the recorded paths still as they were read: a later ``touch`` then costs one hash, not a load."""
    found: dict[str, str] = {}
    for name, sig in paths.items():
        content = _content(name, sig) if sig is not None and observe.signature(name) == sig else None
        if content is not None:
            found[name] = content
    return found


def save(path: Path, graph: Graph, said: Said, record: observe.Recording, started_ns: int) -> None:
    # A file written while the load ran (or within the file system's clock granularity before it)
    # may change again with the same signature: such a load is not kept, the next one will be.
    racy = next((p for p, sig in record.paths.items() if sig is not None and sig[0] >= started_ns - _RACY_NS), None)
    if racy is not None:
        record.volatile.append(f"{racy} (modified while the models were loading)")
    if record.volatile:
        log.debug("graph not kept: the load asked %s", "; ".join(record.volatile))
        return
    for stages in graph.stages.values():
        for stage in stages:
            _ = stage.doit_files  # computed now, kept in the snapshot: a reuse makes no paths
    if _write(path, {"graph": graph, "said": said, "paths": record.paths, "digests": _digests(record.paths)}):
        _prune(path.parent)


def _write(path: Path, data: dict[str, Any]) -> bool:
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(data)
        fsops.write_atomic(path, buffer.getvalue())
    except (pickle.PicklingError, TypeError, AttributeError, OSError) as exc:
        # Something unpicklable, a full disk or a read-only build/: the next run loads the models again.
        log.debug("graph not kept: %s", exc)
        return False
    return True


def _prune(folder: Path) -> None:
    snapshots = sorted(_snapshots(folder), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in snapshots[KEEP:]:
        old.unlink(missing_ok=True)


def _snapshots(folder: Path) -> Iterator[Path]:
    return (p for p in folder.glob("*.pickle") if p.is_file())


def cached(target: toolchain.Target, variables: Mapping[str, str], build: Callable[[], Graph]) -> Graph:
    """The graph ``build`` makes, from the snapshot when one is still valid."""
    path = FOLDER / f"{key(target, variables, os.environ)}.pickle"
    found = load(path)
    if found is not None:
        for name, level, message in found[1]:
            logging.getLogger(name).log(level, "%s", message)
        return found[0]
    started_ns = time.time_ns()
    # Versions read earlier in this process would not be seen reading their metadata.
    toolchain.package_version.cache_clear()
    listener = _Listener()
    logging.getLogger("tasks").addHandler(listener)
    try:
        with observe.recording(ignored=(BUILD / ".cache",)) as record:
            graph = build()
    finally:
        logging.getLogger("tasks").removeHandler(listener)
    save(path, graph, listener.said, record, started_ns)
    return graph
