"""Disk full, said as such: ENOSPC found behind an error, or proven by writing where a tool failed to.

Some tools lose the errno: onnxruntime reports a failed write of its optimised model as
``INVALID_PROTOBUF : Protobuf serialization failed``.  Writing the same amount to the same
path is the one test that cannot be fooled by quotas, reserved blocks or a path that is
not a plain file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_CHUNK = 1 << 20
_DEPTH = 16  # how far down a chain of causes to look


def disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC ``OSError`` that is ``exc`` or caused it, if any."""
    seen: BaseException | None = exc
    for _ in range(_DEPTH):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def message(path: Path | str | None, fallback: Path) -> str:
    """``disk full while writing <path> (N MB free)``."""
    shown = Path(path) if path else fallback
    # The file (or its work folder) may be gone by now: ask the nearest folder that still exists.
    existing = next((p for p in (shown, *shown.absolute().parents) if p.exists()), Path("/"))
    try:
        free = os.statvfs(existing)
        room = f" ({free.f_bavail * free.f_frsize / 1e6:.0f} MB free there)"
    except OSError:
        room = ""
    return f"disk full while writing {shown}{room}"


def cannot_write(path: Path, nbytes: int) -> bool:
    """True if writing ``nbytes`` to ``path`` fails with ENOSPC (the file is removed either way)."""
    block = bytes(_CHUNK)
    try:
        with path.open("wb") as f:
            for start in range(0, max(nbytes, 1), _CHUNK):
                f.write(block[: min(_CHUNK, nbytes - start)] if nbytes else b"\0")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return exc.errno == errno.ENOSPC
    finally:
        path.unlink(missing_ok=True)
    return False
