from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import UserError
from tasks.stages import config


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
    from tasks.families import encoders
    from tasks.triton import layout

    text = encoders.bert_signature({"hidden_size": 384})
    image = encoders.clip_vision_signature({"vision_config": {"image_size": 224}, "projection_dim": 512})
    for family, signature in (("bert", text), ("clip-vision", image)):
        names = [t.name for t in signature.inputs]
        values = {
            "name": "m",
            "front_model": "m_tokenizer" if family == "bert" else "m_preprocess",
            "tokenizer_model": "m_tokenizer",
            "preprocess_model": "m_preprocess",
            "encoder_model": "m_encoder",
            "max_batch_size": 8,
            "instance_count": 1,
            "max_queue_delay_us": 100,
            "instance_kind": "KIND_CPU",
            "encoder_inputs": ",\n".join(t.pbtxt() for t in signature.inputs),
            "encoder_outputs": ",\n".join(t.pbtxt() for t in signature.outputs),
            "front_output_map": config._maps("output_map", names),
            "encoder_input_map": config._maps("input_map", names),
            "embedding_output": signature.embedding,
            "embedding_size": signature.embedding_size,
            "modality": "text" if family == "bert" else "image",
            "max_seq_len": 128,
            "crop_height": 224,
            "crop_width": 224,
        }
        for target in ("cpu", "trt"):
            for model in layout.encoder_models("m", target, family):
                config.render_model(model, values, tmp_path / family / target)
    plan = config.parse((tmp_path / "clip-vision/trt/m_encoder/config.pbtxt").read_text(), tmp_path)
    assert plan.platform == "tensorrt_plan"
    assert [(i.name, list(i.dims)) for i in plan.input] == [("pixel_values", [3, 224, 224])]
    assert [(o.name, list(o.dims)) for o in plan.output] == [("image_embeds", [512])]
    assert 'backend: "python"' in (tmp_path / "bert/cpu/m_encoder/config.pbtxt").read_text()
    ensemble = config.parse((tmp_path / "bert/cpu/m/config.pbtxt").read_text(), tmp_path)
    assert [dict(s.input_map) for s in ensemble.ensemble_scheduling.step] == [
        {"text": "text"},
        {"input_ids": "input_ids", "attention_mask": "attention_mask", "token_type_ids": "token_type_ids"},
    ]
    assert dict(ensemble.ensemble_scheduling.step[1].output_map) == {"sentence_embedding": "embedding"}
