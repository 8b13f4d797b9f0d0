from __future__ import annotations

import pytest

from tasks.core import changes, lock
from tasks.core.errors import UserError
from tasks.tools import trtexec
from tests.helpers import FAKES


def test_banner_version() -> None:
    assert trtexec.version_from_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v101401] # trtexec") == "10.14.1"
    assert trtexec.version_from_banner("no banner") is None


def test_help_parsing_takes_names_and_kinds() -> None:
    flags = trtexec.parse_help((FAKES / "trtexec-help.txt").read_text())
    assert flags["onnx"] == "value"
    assert flags["fp16"] == "switch"
    assert flags["builderOptimizationLevel"] == "value"  # listed without "=" but known to take a value
    assert flags["vc"] == "switch"  # alias on the same line
    assert "workspace" not in flags


def test_flag_args_render_and_reject() -> None:
    table = trtexec.static_table()
    assert trtexec.flag_args({"noTF32": True, "refit": False, "avgTiming": 4}, table) == ["--noTF32", "--avgTiming=4"]
    with pytest.raises(UserError, match=r"engine\.flags\.explicitBatch: removed in TensorRT 10"):
        trtexec.flag_args({"explicitBatch": True}, table)
    with pytest.raises(UserError, match="takes a value"):
        trtexec.flag_args({"avgTiming": True}, table)


def test_static_table_for_an_unknown_version_is_a_clear_error() -> None:
    with pytest.raises(UserError, match=r"no trtexec flag table for TensorRT 9.3 \(tables: 10.14\)"):
        trtexec.static_table("9.3")


@pytest.mark.parametrize(
    ("argv", "mutates"),
    [
        ([], True),
        (["build:minilm"], True),
        (["list", "--status"], False),
        (["-v", "2", "info", "x"], True),
        (["info", "engine:m"], False),
        (["target=cpu", "list"], False),
        (["forget", "-a"], True),
    ],
)
def test_which_commands_take_the_lock(argv: list[str], mutates: bool) -> None:  # noqa: FBT001
    assert lock.command_mutates(argv) is mutates


def test_describe_changes_is_one_line_per_leaf() -> None:
    old = {"engine": {"max_batch_size": 8, "flags": {}}, "code": "1"}
    new = {"engine": {"max_batch_size": 32, "flags": {"noTF32": True}}, "code": "1"}
    assert changes.describe_changes(old, new) == [
        "engine.flags: {} -> <unset>",
        "engine.flags.noTF32: <unset> -> True",
        "engine.max_batch_size: 8 -> 32",
    ]
