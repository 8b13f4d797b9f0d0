"""serve's watch on ``repos/<m>``: a build that swaps the repository reloads the changed models.

The repo stage publishes a whole new tree with one rename, so the directory's inode changes on
every swap; a model whose files all keep their content digests did not change (the large files are
hardlinks into ``build/``, found in the digest cache by inode; the small ones are copies, hashed quickly).
Triton runs with explicit model control and loads a changed model while the
old one keeps answering, so requests do not fail during a reload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from tasks.core import hashing
from tasks.core.errors import UserError

log = logging.getLogger(__name__)

_LOAD_TIMEOUT_S = 600.0
_ENSEMBLE = 'platform: "ensemble"'


def parse_reload(value: str) -> bool:
    if value not in {"on", "off"}:
        raise UserError("reload", f"expected on or off, got {value[:50]!r}")
    return value == "on"


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _signature(model_dir: Path) -> tuple[tuple[str, int, str], ...]:
    entries = []
    for dirpath, _dirs, files in os.walk(model_dir):
        for name in files:
            with contextlib.suppress(OSError):
                path = Path(dirpath) / name
                entries.append((str(path.relative_to(model_dir)), path.stat().st_size, hashing.digest(path)))
    return tuple(sorted(entries))


def models(repo: Path) -> dict[str, tuple[tuple[str, int, str], ...]]:
    """Each model directory of *repo* (one holding ``config.pbtxt``) with its files' sizes and digests."""
    try:
        dirs = [d for d in repo.iterdir() if (d / "config.pbtxt").is_file()]
    except OSError:
        return {}
    return {d.name: _signature(d) for d in dirs}


def _is_ensemble(repo: Path, name: str) -> bool:
    try:
        return _ENSEMBLE in (repo / name / "config.pbtxt").read_text(errors="replace")
    except OSError:
        return False


def _post(url: str) -> None:
    import urllib.request  # noqa: PLC0415 - http.client and ssl cost every doit invocation otherwise

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 - http to our own server
    with opener.open(request, timeout=_LOAD_TIMEOUT_S):
        pass


class RepoWatch:
    """Notice a swapped ``repos/<m>`` and reload (or, with reload off, report) what changed."""

    def __init__(self, repo: Path, *, reload: bool) -> None:
        """Remember the repository as the server loads it now."""
        self.repo = repo
        self.reload = reload
        self._inode = _inode(repo)
        self._models = models(repo)
        self._reported = False

    def check(self, http_url: str) -> None:
        """Act on a swap since the last check; cheap (one stat) when nothing changed."""
        inode = _inode(self.repo)
        if inode is None or inode == self._inode:
            return
        self._inode = inode
        if not self.reload:
            if not self._reported:
                log.warning(
                    "%s changed since serve started; the served models are outdated - restart serve or use reload=on",
                    self.repo,
                )
                self._reported = True
            return
        now = models(self.repo)
        changed = [name for name, sig in now.items() if self._models.get(name) != sig]
        # Members before the ensembles that call them.
        for name in sorted(changed, key=lambda n: (_is_ensemble(self.repo, n), n)):
            self._call(http_url, name, "load")
        for name in sorted(set(self._models) - set(now)):
            self._call(http_url, name, "unload")
        self._models = now

    def _call(self, http_url: str, name: str, action: str) -> None:
        started = time.monotonic()
        try:
            _post(f"http://{http_url}/v2/repository/models/{name}/{action}")
        except OSError as exc:  # URLError is one
            log.error("serve: %s of %s failed (%s); the previous version stays served", action, name, exc)  # noqa: TRY400 - one line
            return
        done = "reloaded" if action == "load" else "unloaded"
        log.info("serve: %s %s from %s in %.1f s (changed by a build)", done, name, self.repo, time.monotonic() - started)
