"""Run one hostile-input case as a real doit process and judge what the user sees.

The pytest corpus and ``scripts/fault_report.py`` share this module, so the table in
``docs/reliability.md`` and the tests classify an outcome the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.cases import Case
from tests.helpers import FAKES, TINY_YAML, copy_project, doit_argv, doit_env, run_doit

# Every process a case starts inherits this variable, so a survivor is found even after it left the process group.
MARK = "FAULT_SUITE_PROJECT"
# The model that is built before any case runs; nothing of it may change.
GUARDED = ("build/tiny", "repos/tiny", "results/tiny", "ckpts/tiny")
MAX_LINE = 300
OUTCOMES = ("clear", "unclear", "traceback", "hang", "accepted")


def build_base(folder: Path, checkpoint: Path) -> Path:
    """A project with ``tiny`` built for target cpu and a spare copy of its checkpoint in ``ckpts/bad``."""
    project = copy_project(folder, {"tiny": TINY_YAML.format(path="../ckpts/tiny")})
    for name in ("tiny", "bad"):
        shutil.copytree(checkpoint, project / "ckpts" / name)
    built = run_doit(project, "build:tiny", "target=cpu")
    if built.rc != 0:
        raise RuntimeError(f"the base project did not build:\n{built.stdout}\n{built.stderr}")
    return project


def snapshot(project: Path, roots: tuple[str, ...] = GUARDED) -> dict[str, tuple[str, int]]:
    """sha256 and inode of every file under ``roots``: a changed byte or a replaced file both show."""
    found: dict[str, tuple[str, int]] = {}
    for root in roots:
        for path in sorted((project / root).rglob("*")):
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(project).as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_ino)
    return found


def changed(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]], *, allow_new: bool = False) -> list[str]:
    names = before.keys() if allow_new else before.keys() | after.keys()
    return sorted(name for name in names if before.get(name) != after.get(name))


def _references(pid: str, needle: bytes) -> bool:
    try:
        return needle in (Path("/proc") / pid / "environ").read_bytes() or needle in (Path("/proc") / pid / "cmdline").read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return False


def survivors(project: Path) -> list[int]:
    """Live processes started for ``project`` (they carry its marker or name it on their command line)."""
    needle = str(project).encode()
    own = str(os.getpid())
    return sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and p.name != own and _references(p.name, needle))


def reap(pids: list[int]) -> None:
    """Kill survivors a run left behind (they were started by this suite), so one failure does not pile up."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def settle(project: Path, seconds: float = 3.0) -> list[int]:
    """Survivors still alive after a short grace period (a child may be between its parent's death and its own)."""
    deadline = time.monotonic() + seconds
    while (left := survivors(project)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def memory_limit(megabytes: int | None) -> Callable[[], None] | None:
    if megabytes is None:
        return None
    size = megabytes * 2**20

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return limit


def case_env(project: Path, case: Case | None = None) -> dict[str, str]:
    extra = {MARK: str(project), **(case.env if case else {})}
    return doit_env(extra, FAKES if case is not None and case.fakes else None)


@dataclass
class Outcome:
    case: Case
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    touched: list[str] = field(default_factory=list)
    left_running: list[int] = field(default_factory=list)
    build_problem: str | None = None  # exit 0 was allowed, and this is what is wrong with the build

    @property
    def error_lines(self) -> list[str]:
        return [line.strip() for line in (self.stderr + "\n" + self.stdout).splitlines() if line.strip().startswith("ERROR:")]

    @property
    def line(self) -> str:
        """The error line the user reads (the last one when there are several)."""
        lines = self.error_lines
        return lines[-1] if lines else ""

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stdout or "Traceback" in self.stderr

    def names_file_and_key(self) -> bool:
        return self.case.file in self.line and (self.case.key is None or self.case.key in self.line)

    @property
    def outcome(self) -> str:
        if self.timed_out:
            return "hang"
        if self.rc == 0:
            return "accepted"
        if self.traceback:
            return "traceback"
        one = len(self.error_lines) == 1 and len(self.line) <= MAX_LINE
        return "clear" if one and self.names_file_and_key() else "unclear"

    def problems(self) -> list[str]:
        """Every way this run fails the corpus's contract (empty: the case passes)."""
        found = [f"changed files of another model: {self.touched[:5]}"] if self.touched else []
        found += [f"processes left running: {self.left_running}"] if self.left_running else []
        if self.timed_out:
            return [f"no answer within {self.case.timeout:.0f} s", *found]
        if self.rc == 0:
            if self.case.built_ok is None or self.build_problem is not None:
                found.append(f"exit 0 (accepted){': ' + self.build_problem if self.build_problem else ''}")
            return found
        if self.case.rc is not None and self.rc != self.case.rc:
            found.append(f"exit {self.rc}, expected {self.case.rc}")
        if self.traceback:
            found.append("a traceback in the output")
        if len(self.error_lines) != 1:
            found.append(f"{len(self.error_lines)} ERROR: lines, expected 1")
        if not self.names_file_and_key():
            found.append(f"the line does not name {self.case.file!r} and {self.case.key!r}")
        if len(self.line) > MAX_LINE:
            found.append(f"the line is {len(self.line)} characters long")
        return found

    def report(self) -> str:
        tail = (self.stdout[-1500:] + "\n" + self.stderr[-1500:]).strip()
        return f"{self.case.id}: {'; '.join(self.problems())}\nrc {self.rc}, line {self.line[:400]!r}\n{tail}"


def prepare(case: Case, base: Path, folder: Path) -> Path:
    project = folder / "p"
    shutil.copytree(base, project, symlinks=True, copy_function=shutil.copy2)
    for name, content in case.files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if case.damage is not None:
        case.damage(project)
    return project


def run_case(case: Case, base: Path, folder: Path) -> Outcome:
    """Copy the built project, break it as the case says, run its command, and collect what the user sees."""
    project = prepare(case, base, folder)
    before = snapshot(project)
    started = time.monotonic()
    proc = subprocess.Popen(
        doit_argv(*case.command),
        cwd=project,
        env=case_env(project, case),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group: a hang is killed whole
        preexec_fn=memory_limit(case.memory_mb),  # noqa: PLW1509 - only setrlimit, before exec
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    seconds = time.monotonic() - started
    left = [] if timed_out else settle(project)
    reap(survivors(project))
    outcome = Outcome(
        case, proc.returncode, out, err, seconds, timed_out, changed(before, snapshot(project), allow_new=case.allow_new), left
    )
    if outcome.rc == 0 and case.built_ok is not None:
        outcome.build_problem = case.built_ok(project)
    return outcome
