from __future__ import annotations

from pathlib import Path

import pytest

from tasks import config
from tasks.errors import UserError


def test_fill_requires_every_placeholder(tmp_path: Path) -> None:
    template = tmp_path / "config.pbtxt"
    template.write_text('name: "${name}"\nmax_batch_size: ${max_batch_size}\n')
    assert config.fill(template, {"name": "m", "max_batch_size": 4}) == 'name: "m"\nmax_batch_size: 4\n'
    with pytest.raises(UserError, match=r"config.pbtxt: placeholder \$\{max_batch_size\} has no value"):
        config.fill(template, {"name": "m"})


def test_fill_rejects_a_leftover_placeholder(tmp_path: Path) -> None:
    template = tmp_path / "config.pbtxt"
    template.write_text('name: "$${name}"\n')  # an escaped $ that would leave "${name}" behind
    with pytest.raises(UserError, match=r"a '\$\{' is left after filling"):
        config.fill(template, {"name": "m"})


def test_parse_uses_tritons_proto_and_reports_line_and_column(tmp_path: Path) -> None:
    template = tmp_path / "config.pbtxt"
    parsed = config.parse('name: "m"\nplatform: "ensemble"\nmax_batch_size: 8\n', template)
    assert parsed.max_batch_size == 8
    with pytest.raises(UserError, match=r'2:1 : Message type "inference.ModelConfig" has no field named "max_batch_sise"'):
        config.parse('name: "m"\nmax_batch_sise: 8\n', template)
    with pytest.raises(UserError, match="TYPE_STRNG"):
        config.parse('name: "m"\ninput [ { name: "t" data_type: TYPE_STRNG dims: [ 1 ] } ]\n', template)


def test_every_shipped_template_fills_and_parses(tmp_path: Path) -> None:
    from tasks import layout

    values = {
        "name": "m",
        "tokenizer_model": "m_tokenizer",
        "encoder_model": "m_encoder",
        "max_batch_size": 8,
        "instance_count": 1,
        "max_queue_delay_us": 100,
        "max_seq_len": 128,
        "hidden_size": 384,
        "instance_kind": "KIND_CPU",
    }
    for target in ("cpu", "trt"):
        for model in layout.encoder_models("m", target):
            config.render_model(model, values, tmp_path / target)
    assert 'platform: "tensorrt_plan"' in (tmp_path / "trt/m_encoder/config.pbtxt").read_text()
    assert 'backend: "python"' in (tmp_path / "cpu/m_encoder/config.pbtxt").read_text()
