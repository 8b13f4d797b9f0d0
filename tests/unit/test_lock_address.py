"""The project lock names its holder even when read before the holder wrote it; serve's address is checked."""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tasks.core import lock
from tasks.core.errors import UserError
from tasks.triton.processes import check_address


def test_refused_run_names_the_pid_written_after_the_lock_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".lock"
    monkeypatch.setattr(lock, "_PATH", path)
    monkeypatch.setattr(lock, "_HANDLE", None)
    # Another run has taken the lock but not yet written its pid (the window a refused run can hit).
    holder = path.open("a+", encoding="utf-8")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write_late() -> None:
        time.sleep(0.3)
        holder.write("pid 4242 since 12:00:00\n")
        holder.flush()

    writer = threading.Thread(target=write_late)
    writer.start()
    try:
        with pytest.raises(UserError, match=re.escape("(pid 4242 since 12:00:00)")):
            lock.hold()
    finally:
        writer.join()
        holder.close()


def test_holder_line_replaces_a_longer_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".lock"
    path.write_text("pid 999999999 since 00:00:00 and some older text\n")
    monkeypatch.setattr(lock, "_PATH", path)
    monkeypatch.setattr(lock, "_HANDLE", None)
    lock.hold()
    try:
        assert re.fullmatch(rf"pid {os.getpid()} since \d\d:\d\d:\d\d\n", path.read_text())
    finally:
        lock.release()


@pytest.mark.parametrize("address", ["999.1.1.1", "10.254.253.252", "not a host"])
def test_address_that_is_not_this_machines_is_named(address: str) -> None:
    with pytest.raises(UserError, match=rf"^address: '{re.escape(address)}' is not a valid address for this machine"):
        check_address(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "localhost"])  # noqa: S104 - listening everywhere is valid
def test_addresses_of_this_machine_pass(address: str) -> None:
    check_address(address)
