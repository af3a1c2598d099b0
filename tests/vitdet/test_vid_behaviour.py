"""MODEL.RGTP.BEHAVIOUR and its quirk keys (docs/method.md §10.3, §11) on hand-made inputs and a tiny detector: the
preset and one-at-a-time overrides, the uint8 test resize, and boxes clipped to the frame or to the padded canvas.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from rgtp_vitdet import RGTPCheckpointer
from rgtp_vitdet.config import behaviour_setting, rgtp_config_from_cfg, validate_config
from rgtp_vitdet.data import VIDTestMapper, resize_frame
from rgtp_vitdet.meta_arch import _rescale_unclipped
from vitdet_helpers import FRAME_H, FRAME_W, tiny_cfg

from rgtp.config import ConfigError

QUIRKS = ("TIE_BREAK", "TRACKING_BORDER", "CLIP_BOXES_TO", "RESIZE_ROUNDING")


def _resolved(cfg):
    r = rgtp_config_from_cfg(cfg)
    return (
        r.tie_break,
        r.tracking_border,
        behaviour_setting(cfg, "CLIP_BOXES_TO"),
        behaviour_setting(cfg, "RESIZE_ROUNDING"),
    )


CLEAN = ("low", "exclude", "image", "float")
OFFICIAL = ("high", "official", "padded", "uint8")


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "config,expected",
    [
        ("configs/vid/keep512.yaml", OFFICIAL),
        ("configs/vid/base.yaml", OFFICIAL),
        ("configs/vid/res1024_keep400.yaml", OFFICIAL),
        ("configs/demo/vid_keep64.yaml", CLEAN),
        ("configs/demo/vid_base.yaml", CLEAN),
    ],
)
def test_paper_configs_are_official_demo_configs_clean(config, expected):
    cfg = tiny_cfg(config)
    assert _resolved(cfg) == expected
    assert rgtp_config_from_cfg(cfg).behaviour == ("official" if expected == OFFICIAL else "clean")


def test_the_defaults_are_clean():
    from detectron2.config import get_cfg
    from rgtp_vitdet import add_rgtp_config

    cfg = get_cfg()
    add_rgtp_config(cfg)
    assert cfg.MODEL.RGTP.BEHAVIOUR == "clean" and all(cfg.MODEL.RGTP[k] == "" for k in QUIRKS)
    assert _resolved(cfg) == CLEAN


@pytest.mark.parametrize("behaviour,base", [("official", OFFICIAL), ("clean", CLEAN)])
@pytest.mark.parametrize("i", range(4))
def test_one_quirk_at_a_time_overrides_the_preset(behaviour, base, i):
    other = CLEAN if base == OFFICIAL else OFFICIAL
    cfg = tiny_cfg(
        "configs/vid/keep512.yaml",
        ["MODEL.RGTP.BEHAVIOUR", behaviour, f"MODEL.RGTP.{QUIRKS[i]}", other[i]],
    )
    validate_config(cfg)
    assert _resolved(cfg) == base[:i] + (other[i],) + base[i + 1 :]


@pytest.mark.parametrize(
    "key,value",
    [
        ("BEHAVIOUR", "paper"),
        ("TIE_BREAK", "first"),
        ("TRACKING_BORDER", "zero"),
        ("CLIP_BOXES_TO", "canvas"),
        ("RESIZE_ROUNDING", "uint16"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(key, value):
    cfg = tiny_cfg("configs/vid/keep512.yaml", [f"MODEL.RGTP.{key}", value])
    with pytest.raises(ConfigError, match=rf"MODEL\.RGTP\.{key}='{value}': allowed one of \("):
        validate_config(cfg)


# ------------------------------------------------------------------------------------------ resize
def test_uint8_rounding_changes_a_hand_computed_pixel():
    # one row of 3 pixels -> 1 pixel: the antialiased triangle filter weighs them 2/3, 1, 2/3 (sum 7/3)
    img = np.array([[[0, 0, 7], [0, 0, 7], [2, 1, 7]]], dtype=np.uint8)  # (H=1, W=3, RGB)
    clean = resize_frame(img, (1, 1))
    torch.testing.assert_close(clean[:, 0, 0], torch.tensor([4 / 7, 2 / 7, 7.0]))
    assert resize_frame(img, (1, 1), "float").equal(clean)
    official = resize_frame(img, (1, 1), "uint8")
    assert official[:, 0, 0].tolist() == [1.0, 0.0, 7.0]  # 0.571 -> 1, 0.286 -> 0
    # no resize: the frame is already 8-bit, both roundings give it unchanged
    assert resize_frame(img, (1, 3), "uint8").equal(resize_frame(img, (1, 3)))
    with pytest.raises(ValueError, match="rounding='int'"):
        resize_frame(img, (1, 1), "int")


def test_mapper_rounds_the_resized_frame_in_official_mode(vid_root):
    from detectron2.data import DatasetCatalog

    os.environ["RGTP_DATASETS"] = str(vid_root)
    d = DatasetCatalog.get("vid_val")[0]
    opts = lambda v: ["MODEL.RGTP.RESIZE_ROUNDING", v]  # noqa: E731
    clean = VIDTestMapper(tiny_cfg(opts=opts("float")))(d)["image"]
    official = VIDTestMapper(tiny_cfg(opts=opts("uint8")))(d)["image"]
    assert VIDTestMapper(tiny_cfg())(d)["image"].equal(official)  # the paper config is official
    assert clean.shape == official.shape == (3, 77, 128)
    assert official.equal(official.round()) and not clean.equal(clean.round())
    diff = (official - clean).abs()
    assert 0 < diff.max() <= 0.5 and official.equal(clean.round())


# ------------------------------------------------------------------------------------------ clip
def test_rescale_keeps_a_hand_made_box_in_the_padding():
    # resized frame 77x128 on a 128x128 canvas, original frame 96x160; the box reaches 43 px into the padding
    r = Instances((128, 128))
    r.pred_boxes = Boxes(torch.tensor([[16.0, 66.0, 64.0, 120.0]]))
    r.scores = torch.tensor([0.9])
    r.pred_classes = torch.tensor([0])
    out = _rescale_unclipped(r, (77, 128), 96, 160)
    assert out.image_size == (96, 160)
    torch.testing.assert_close(
        out.pred_boxes.tensor, torch.tensor([[20.0, 66.0 * 96 / 77, 80.0, 120.0 * 96 / 77]])
    )
    # detectron2's postprocess (the clean path) clips the same box to the frame instead
    r2 = Instances((77, 128), pred_boxes=Boxes(torch.tensor([[16.0, 66.0, 64.0, 120.0]])))
    assert detector_postprocess(r2, 96, 160).pred_boxes.tensor[0, 3].item() == 96.0


def _detector(weights, clip, config="configs/vid/keep512.yaml"):
    cfg = tiny_cfg(config, ["MODEL.RGTP.BEHAVIOUR", "clean", "MODEL.RGTP.CLIP_BOXES_TO", clip])
    torch.manual_seed(0)
    m = build_model(cfg)
    RGTPCheckpointer(m, strict=True).load(str(weights))
    return m.eval(), cfg


@pytest.mark.parametrize("config", ["configs/vid/keep512.yaml", "configs/vid/base.yaml"])
def test_heads_clip_to_the_frame_or_to_the_padded_canvas(vid_root, tiny_weights, config):
    from detectron2.data import DatasetCatalog

    os.environ["RGTP_DATASETS"] = str(vid_root)
    runs = {}
    for clip in ("image", "padded"):
        model, cfg = _detector(tiny_weights, clip, config)
        frames = [VIDTestMapper(cfg)(d) for d in DatasetCatalog.get("vid_val")[:3]]
        masks = []
        if model.rgtp_enabled:
            update = model.net.update_heatmap

            def spy(states, m, update=update, seen=masks):
                seen.append(m.clone())
                return update(states, m)

            model.net.update_heatmap = spy
        with torch.inference_mode():
            raw = [model.inference([f], do_postprocess=False)[0] for f in frames]
            raw_masks = list(masks)
            model.reset_streams()
            final = [model([f])[0]["instances"] for f in frames]
        runs[clip] = (raw, final, raw_masks)
    h, canvas = 77, 128  # resized frame height, padded canvas side
    raw, final, masks = runs["image"]
    for r, o in zip(raw, final):
        assert r.pred_boxes.tensor[:, 3].max() <= h and r.pred_boxes.tensor[:, 2].max() <= canvas
        b = o.pred_boxes.tensor
        assert b[:, 3].max() <= FRAME_H and b[:, 2].max() <= FRAME_W
    raw_p, final_p, masks_p = runs["padded"]
    into_padding = [int((r.pred_boxes.tensor[:, 3] > h).sum()) for r in raw_p]
    assert all(n > 0 for n in into_padding)  # boxes reach into the padding...
    assert all(r.pred_boxes.tensor.max() <= canvas for r in raw_p)  # ...but not past the canvas
    assert any(o.pred_boxes.tensor[:, 3].max() > FRAME_H for o in final_p)  # returned as they are
    for r, o in zip(raw_p, final_p):  # the returned boxes are the heads' boxes, scaled to the frame
        scale = torch.tensor([FRAME_W / 128, FRAME_H / h, FRAME_W / 128, FRAME_H / h])
        torch.testing.assert_close(o.pred_boxes.tensor, r.pred_boxes.tensor * scale)
    if model.rgtp_enabled:
        # the rollout anchors: token rows 5..7 lie wholly in the padding (77 px = 4.8 token rows)
        assert len(masks) == len(masks_p) == 3
        for m, mp in zip(masks, masks_p):
            # not the all-tokens fallback, and no anchor in the padding
            assert not m.all() and not m[:, 5:].any()
            assert mp[:, 5:].any()
    else:
        assert masks == masks_p == []
