"""The ViViT model: keep-all equals dense, batched views, checkpoint conversion from TAdaConv names."""

from __future__ import annotations

import pytest
import torch
from rgtp_vivit.build import build_model
from rgtp_vivit.checkpoint import (
    CheckpointError,
    apply_state,
    convert_tadaconv_state,
    load_model_state,
)
from vivit_helpers import TINY_EPIC, TINY_KINETICS, cfg_from

_INVERSE_BLOCK = {"norm1": "norm", "attn.qkv": "attn.to_qkv", "attn.proj": "attn.proj", "norm2": "norm_ffn",
                  "mlp.fc1": "ffn.net.0", "mlp.fc2": "ffn.net.3"}  # fmt: skip
_INVERSE = {"tubelet_embed": "backbone.stem", "spatial.cls_token": "backbone.cls_token",
            "spatial.pos_embed": "backbone.pos_embd", "temporal.cls_token": "backbone.cls_token_out",
            "temporal.pos_embed": "backbone.temp_embd", "spatial.norm": "backbone.norm",
            "temporal.norm": "backbone.norm_out", "classifier": "head.linear1",
            "noun_classifier": "head.linear2"}  # fmt: skip


def to_tadaconv(state):
    """Our state dict under TAdaConv's names (what the official checkpoints look like)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[1] == "blocks":
            layers = "layers" if parts[0] == "spatial" else "layers_temporal"
            name = _INVERSE_BLOCK[".".join(parts[3:-1])]
            out[f"module.backbone.{layers}.{parts[2]}.{name}.{parts[-1]}"] = v
        elif k in _INVERSE:
            out[_INVERSE[k]] = v
        else:
            out[f"{_INVERSE['.'.join(parts[:-1])]}.{parts[-1]}"] = v
    return out


def _model(opts, base="configs/kinetics/keep_049.yaml", tiny=TINY_KINETICS):
    torch.manual_seed(0)
    return build_model(cfg_from([base], tiny + list(opts))).eval()


def _clips(n=12, frames=8, seed=1):
    return torch.randn(n, 3, frames, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_keep_all_equals_dense_logits():
    dense = _model(["RGTP.ENABLE", "False"])
    keep_all = _model(["RGTP.KEEP_RATIO", "1.0", "RGTP.FULL_ON_RESET", "True"])
    pruned = _model([])
    x = _clips()
    with torch.no_grad():
        a, b, c = dense(x)["logits"], keep_all(x)["logits"], pruned(x)["logits"]
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert keep_all.last_state.kept_counts == [16] * 4
    assert pruned.last_state.kept_counts == [16, 8, 8, 8]  # 0.49 * 16 -> 8; 1in2 reset -> 8
    assert not torch.allclose(c, a, atol=1e-4)


def test_views_of_several_videos_batch_independently():
    m = _model([])
    x = _clips(24)
    with torch.no_grad():
        both = m(x)["logits"]
        first, second = m(x[:12])["logits"], m(x[12:])["logits"]
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)


def test_wrong_clip_length_is_rejected():
    with pytest.raises(ValueError, match="expects 4"):
        _model([])(torch.randn(1, 3, 6, 64, 64))


def test_tadaconv_checkpoint_converts_with_the_noun_head(tmp_path):
    src = _model([], "configs/epic/fg_160s05_bg_009.yaml", TINY_EPIC)
    path = tmp_path / "tadaconv.pyth"
    torch.save({"model_state": to_tadaconv(src.state_dict()), "epoch": 30}, path)
    dst = build_model(cfg_from(["configs/epic/fg_160s05_bg_009.yaml"], TINY_EPIC)).eval()
    load_model_state(dst, str(path))
    x = _clips()
    with torch.no_grad():
        a, b = src(x), dst(x)
    torch.testing.assert_close(b["logits"], a["logits"])
    torch.testing.assert_close(b["noun_logits"], a["noun_logits"])
    # the conversion (tools/convert_vivit_checkpoint.py) writes {"model_state": ...} after verifying it
    from rgtp_vivit.convert import convert_checkpoint_file

    out = tmp_path / "converted.pyth"
    convert_checkpoint_file(str(path), str(out), "configs/epic/fg_160s05_bg_009.yaml", TINY_EPIC)
    state = torch.load(out)["model_state"]
    assert "noun_classifier.weight" in state and "spatial.blocks.1.mlp.fc2.bias" in state
    convert_checkpoint_file(str(path), str(out), drop_noun_head=True)
    assert "noun_classifier.weight" not in torch.load(out)["model_state"]


def test_conversion_errors_list_the_keys(tmp_path):
    src = _model([])
    state = to_tadaconv(src.state_dict())
    with pytest.raises(
        CheckpointError, match=r"unexpected keys with no ViViT mapping: \['backbone.extra.weight'\]"
    ):
        convert_tadaconv_state({**state, "backbone.extra.weight": torch.zeros(1)})
    del state["module.backbone.layers.1.ffn.net.3.weight"]
    with pytest.raises(
        CheckpointError, match=r"missing keys \['spatial.blocks.1.mlp.fc2.weight'\]"
    ):
        apply_state(
            build_model(cfg_from(["configs/kinetics/keep_049.yaml"], TINY_KINETICS)), state, "ckpt"
        )
    wrong = build_model(
        cfg_from(["configs/kinetics/keep_049.yaml"], TINY_KINETICS + ["MODEL.NUM_CLASSES", "7"])
    )
    with pytest.raises(
        CheckpointError, match=r"classifier.weight: checkpoint \(3, 64\) vs model \(7, 64\)"
    ):
        apply_state(wrong, src.state_dict(), "ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model_state(wrong, str(tmp_path / "none.pyth"))
