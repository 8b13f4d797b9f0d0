"""doit plan's retargeting, without a build: a stage's toolchain items take the values a recorded build had."""

from __future__ import annotations

from tasks.commands import platforms


def test_retarget_picks_the_recorded_shape() -> None:
    record = {"engine": {"tensorrt": "10.14", "gpu": "L4"}, "packages": {"torch": "2.9"}}
    assert platforms.retarget({"tensorrt": "x", "gpu": "none"}, record) == {"tensorrt": "10.14", "gpu": "L4"}
    assert platforms.retarget({"tensorrt_llm": "x", "gpu": "none"}, record) is None
    assert platforms.retarget({"torch": "2.8", "onnx": "1.1"}, record) == {"torch": "2.9", "onnx": "1.1"}
    assert platforms.retarget({}, record) == {}
