"""Filesystem moves that never leave a half-written output where a finished one belongs."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_TMP_MARK = ".tmp-"
_RMTREE_ATTEMPTS = 5
# linux/fs.h _IOW(0x94, 9, int); Python's fcntl names it only from 3.12.
_FICLONE = getattr(fcntl, "FICLONE", 0x40049409)
# What ioctl(FICLONE) answers where the filesystem (ext4, tmpfs) or the pair of paths cannot share extents.
_NO_REFLINK = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM})
_WRITE_BITS = 0o222


def tmp_sibling(path: Path) -> Path:
    """A private work dir next to ``path`` (same filesystem, so rename is atomic)."""
    return path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(path: Path) -> None:
    """Delete work dirs of ``path`` left by runs that were killed (their pid is gone)."""
    _remove_stale(path.parent, f".{path.name}")


def remove_stale_tmp_in(folder: Path) -> None:
    """Delete every ``.<name>.tmp-<pid>`` entry of ``folder`` (``tmp_sibling``'s naming) whose process is gone."""
    _remove_stale(folder, None)


def _remove_stale(folder: Path, base: str | None) -> None:
    try:
        # Names only (no Path per entry): every mutating run looks into every folder of build/.
        names = [e.name for e in os.scandir(folder) if e.name.startswith(".") and _TMP_MARK in e.name]
    except OSError:  # not there (yet), or not a folder
        return
    for entry_name in names:
        name, _, pid = entry_name.rpartition(_TMP_MARK)
        ours = name == base if base is not None else len(name) > 1
        if ours and pid.isdigit() and not _pid_alive(int(pid)):
            entry = folder / entry_name
            log.info("removing %s left by an interrupted run", entry)
            remove_tree(entry)


def subfolders(parent: Path) -> list[Path]:
    """Sub-folders, sorted, without dot names (work trees ``.<name>.tmp-<pid>`` another run may remove meanwhile)."""
    try:
        return sorted(Path(e.path) for e in os.scandir(parent) if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except OSError:  # not there, or gone meanwhile
        return []


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    # A library thread may still be closing a file in a work dir that an interrupt is
    # tearing down ("Directory not empty"): try again briefly before giving up.
    for attempt in range(_RMTREE_ATTEMPTS):
        if not path.exists():
            return
        try:
            shutil.rmtree(path)
        except OSError:
            if attempt == _RMTREE_ATTEMPTS - 1:
                raise
            time.sleep(0.1)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False if unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_in(new: Path, dest: Path) -> Path | None:
    """Publish directory ``new`` at ``dest``; return where the previous ``dest`` now is.

    With an existing ``dest`` the two are exchanged in one syscall, so readers (a
    running Triton) see either the old or the new tree, never a missing one.
    """
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        new.rename(dest)
        return None
    if _exchange(new, dest):
        return new
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    dest.rename(old)
    new.rename(dest)
    return old


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hardlink ``src`` to ``dst``; copy only across filesystems. True if linked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)
        return False
    return True


def clone_or_copy(src: Path, dst: Path) -> bool:
    """Write ``src``'s bytes to a new inode at ``dst``; True when the filesystem reflinked them.

    A reflink (btrfs, XFS) shares extents copy-on-write, so it costs no time or space and a later
    write to either file leaves the other as it was; elsewhere (ext4) the kernel copies
    (``shutil.copyfile`` uses ``sendfile``).  Either way nothing written to ``dst`` reaches ``src``.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as source, dst.open("wb") as target:
        try:
            fcntl.ioctl(target.fileno(), _FICLONE, source.fileno())
        except OSError as exc:
            if exc.errno not in _NO_REFLINK:
                raise
        else:
            return True
    shutil.copyfile(src, dst)
    return False


def link_read_only(src: Path, dst: Path) -> bool:
    """Hardlink ``src`` (a file this project wrote) to ``dst`` and take the write bits off the shared inode.

    The mode stops users other than root from writing through one name into the other; root
    ignores it, so the manifests of both outputs are what catch such a write (see docs/stages.md).
    """
    linked = link_or_copy(src, dst)
    mode = dst.stat().st_mode
    if mode & _WRITE_BITS:
        dst.chmod(mode & ~_WRITE_BITS)
    return linked


# Artifacts a build writes and no user edits by hand: ONNX (and its external data), TensorRT plans and
# TensorRT-LLM engines, checkpoint weights, an index's vectors.
SHARED_SUFFIXES = frozenset({".onnx", ".onnx_data", ".plan", ".engine", ".safetensors", ".bin", ".npy"})
# Whatever its name, a file this large is an artifact too: a repository never holds a copy of one.
SHARED_MIN_BYTES = 64 << 20


def shared(path: Path) -> bool:
    """Whether a repository hardlinks ``path`` (an artifact) rather than copying it (a file users edit)."""
    return path.suffix in SHARED_SUFFIXES or path.stat().st_size >= SHARED_MIN_BYTES


def place(src: Path, dest: Path) -> int:
    """One file into a repository: hardlinked read-only if an artifact, else copied; 1 if an artifact was copied."""
    if shared(src):
        return 0 if link_read_only(src, dest) else 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    clone_or_copy(src, dest)
    return 0


def link_tree(src: Path, dest: Path, skip: frozenset[str] = frozenset()) -> int:
    """Place every file under ``src`` at the same place under ``dest``; return how many artifacts were copied.

    Directories are recreated too, empty ones included: an ensemble's empty version folder
    (``<model>/1/``) is what makes Triton see a version of it.  ``skip``: names left out at the root.
    """
    if src.is_file():
        return place(src, dest)
    copies = 0
    for dirpath, _, filenames in os.walk(src):
        here = Path(dirpath)
        (dest / here.relative_to(src)).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            if here == src and name in skip:
                continue
            copies += place(here / name, dest / (here / name).relative_to(src))
    return copies


def json_text(data: Any) -> str:  # noqa: ANN401 - any JSON value
    """The exact text ``write_json_atomic`` writes: a manifest's digest can be known before the file exists."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_json_atomic(path: Path, data: Any) -> None:  # noqa: ANN401 - any JSON value
    """Write JSON through a temp file and rename, with stable key order."""
    write_atomic(path, json_text(data).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file and rename: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_if_changed(path: Path, data: Any) -> None:  # noqa: ANN401 - any JSON value
    """``write_json_atomic`` unless the file already holds this text: its inode and digest stay as they are."""
    try:
        if path.read_text(encoding="utf-8") == json_text(data):
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_json_atomic(path, data)


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped (prompt and corpus files); OSError or UnicodeDecodeError."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_json(path: Path) -> Any:  # noqa: ANN401 - any JSON value
    """Parsed JSON, or None when the file is missing or unreadable (treated as not built)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
