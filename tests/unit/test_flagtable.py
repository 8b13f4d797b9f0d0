"""The flag-table core both tools go through, and the facts of the trtexec 10.14 and trtllm-build 1.2.1 tables."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tasks.core.errors import UserError
from tasks.tools import flagtable, trtexec, trtllm, trtllm_argv
from tests.helpers import FAKES


@pytest.mark.parametrize(("module", "name"), [(trtexec, "trtexec"), (trtllm, "trtllm-build")])
def test_both_tools_load_their_table_through_the_core_with_provenance(module: object, name: str) -> None:
    table = module.static_table()  # type: ignore[attr-defined]
    assert table is flagtable.load_table(name, module.TOOL.product, module.PINNED_VERSION)  # type: ignore[attr-defined]
    assert isinstance(table, flagtable.FlagTable)
    assert set(table.header) == set(flagtable.HEADER)
    assert table.header["tool"] == name
    assert table.header["version"] == table.version
    assert all(table.header["source"][key] for key in flagtable.SOURCE_KEYS)
    assert module.check_flag is not flagtable.check_flag  # type: ignore[attr-defined]
    assert module.check_flag("fooBar", table).startswith(f"not a {name} flag")  # type: ignore[attr-defined]


def test_trtexec_table_names_the_commit_it_was_read_from() -> None:
    source = trtexec.static_table().header["source"]
    assert source["repository"] == "NVIDIA/TensorRT"
    assert source["path"] == "samples/common/sampleOptions.cpp"
    assert source["ref"] == "commit 3b4ddc1d45f11167f2ea53dc6046bba8df800e2d"


def test_a_table_without_provenance_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.loads((flagtable.TABLES / "trtexec-10.14.json").read_text())
    del data["source"]["ref"]
    (tmp_path / "trtexec-0.1.json").write_text(json.dumps(data))
    monkeypatch.setattr(flagtable, "TABLES", tmp_path)
    with pytest.raises(UserError, match=r"flag table without provenance: missing source\.ref"):
        flagtable.load_table("trtexec", "TensorRT", "0.1")


def test_renamed_flags_are_refused_naming_the_real_flag() -> None:
    table = trtexec.static_table()
    weight = trtexec.check_value("weightStreaming", value=True, table=table)
    assert weight is not None
    assert "the flag is allowWeightStreaming" in weight
    profile = trtexec.check_value("optProfileIndex", 1, table)
    assert profile is not None
    assert "the flag is useProfile" in profile
    assert trtexec.check_value("useProfile", 1, table) is None
    assert trtexec.flag_args({"useProfile": 1}, table) == ["--useProfile=1"]


def test_deprecated_flags_pass_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    table = trtexec.static_table()
    with caplog.at_level(logging.WARNING, logger="tasks.tools.flagtable"):
        argv = trtexec.flag_args({"plugins": "libx.so", "infStreams": 2}, table)
    assert argv == ["--plugins=libx.so", "--infStreams=2"]
    assert [r.getMessage() for r in caplog.records] == [
        "engine.flags.plugins: --plugins is deprecated in TensorRT 10.14: the parser warns and treats it as staticPlugins; use staticPlugins"
    ]
    assert "plugins" not in table.removed
    assert "streams" not in table.removed
    assert trtexec.check_value("streams", 2, table) is None


def test_precision_switches_are_recorded_deprecated_and_still_built() -> None:
    table = trtexec.static_table()
    for precision in ("fp16", "bf16", "int8", "best"):
        note = trtexec.precision_note(precision, table)
        assert note is not None
        assert "strongly typed" in note
        assert table.flags[precision].kind == "switch"
    assert trtexec.precision_note("fp32", table) is None


def test_weight_streaming_needs_strong_typing() -> None:
    table = trtexec.static_table()
    problem = trtexec.check_flags({"allowWeightStreaming": True}, table)
    assert problem is not None
    assert problem[0] == "allowWeightStreaming"
    assert problem[1].startswith("needs stronglyTyped: true in the same flags")
    assert trtexec.check_flags({"allowWeightStreaming": True, "stronglyTyped": False}, table) is not None
    assert trtexec.check_flags({"allowWeightStreaming": False}, table) is None
    with pytest.raises(UserError, match=r"engine\.flags\.allowWeightStreaming: needs stronglyTyped"):
        trtexec.flag_args({"allowWeightStreaming": True}, table)
    ok = {"stronglyTyped": True, "allowWeightStreaming": True, "weightStreamingBudget": "50%"}
    assert trtexec.flag_args(ok, table) == ["--stronglyTyped", "--allowWeightStreaming", "--weightStreamingBudget=50%"]
    budget = trtexec.check_flags({"weightStreamingBudget": "1G"}, table)
    assert budget is not None
    assert budget[1].startswith("needs allowWeightStreaming: true")


def test_streamingllm_enable_is_refused_and_disable_passes() -> None:
    table = trtllm.static_table()
    problem = trtllm.check_value("streamingllm", "enable", table)
    assert problem is not None
    assert "StreamingLLM is no longer supported" in problem
    assert trtllm.check_value("streamingllm", "disable", table) is None
    assert trtllm_argv.check_engine_flags({"flags": {"streamingllm": "enable"}}, "llama") is not None
    with pytest.raises(UserError, match=r"engine\.flags\.streamingllm: streamingllm enable is refused"):
        trtllm.flag_args({"streamingllm": "enable"}, table)


def test_static_table_and_fake_help_list_the_same_flags() -> None:
    """The fake trtexec's help is the 10.14 listing: it and the static table cannot drift apart."""
    table = trtexec.static_table()
    helped = trtexec.parse_help((FAKES / "trtexec-help.txt").read_text())
    assert set(helped) == set(table.flags) - set(table.rules.unlisted)
    assert {name: kind for name, kind in helped.items() if kind != table.flags[name].kind} == {}
    assert set(table.rules.unlisted) <= set(table.flags)


def test_installed_table_agrees_with_the_static_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the --help cache is build/.cache under the current directory
    binary = tmp_path / "trtexec"
    shutil.copy(FAKES / "trtexec", binary)
    shutil.copy(FAKES / "trtexec-help.txt", tmp_path)
    installed = trtexec.installed_table(binary)
    static = trtexec.static_table()
    assert installed.version == "10.14.1"
    assert set(installed.flags) == set(static.flags)
    assert installed.rules.renamed == static.rules.renamed
    assert trtexec.check_value("plugins", "libx.so", installed) is None
    problem = trtexec.check_flags({"allowWeightStreaming": True}, installed)
    assert problem is not None
    assert problem[0] == "allowWeightStreaming"
