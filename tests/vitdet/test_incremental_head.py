"""The incremental detection head (``MODEL.RGTP.INCREMENTAL_HEAD``): on pruned frames the pyramid and the RPN
convolutions run only where the kept tokens change them, the box head only on the proposals whose box or pooled
features changed, and all equal the dense head to float rounding (many frames, padded and unpadded images,
batches of streams, streams at different points of their schedule)."""

from __future__ import annotations

import gc
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ROIAlign
from detectron2.modeling import build_model
from rgtp_vitdet import RGTPCheckpointer
from rgtp_vitdet.config import validate_config
from rgtp_vitdet.regions import HeadFlopCounter, dilate, rects, run_on_rects, token_masks
from rgtp_vitdet.roi_heads import support_rects
from vitdet_helpers import tiny_cfg

from rgtp.config import ConfigError

ATOL = 2e-5  # float rounding of convolutions run on other shapes


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(incremental: bool, weights, opts=()):
    cfg = tiny_cfg(
        "configs/vid/keep512.yaml",
        ["MODEL.RGTP.INCREMENTAL_HEAD", incremental, "MODEL.RGTP.KEEP_RATIO", 0.25, *opts],
    )
    torch.manual_seed(0)
    m = build_model(cfg)
    RGTPCheckpointer(m, strict=True).load(str(weights))
    return m.eval()


def _frames(n: int, h: int, w: int, seed: int) -> List[torch.Tensor]:
    """``n`` frames (3, h, w) in 0..255 of a textured background with a moving bright rectangle."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand(3, h + n, w + 2 * n, generator=g) * 120
    out = []
    for t in range(n):
        img = bg[:, t : t + h, 2 * t : 2 * t + w].clone()
        y, x = 10 + t, 8 + 3 * t
        img[:, y : y + h // 3, x : x + w // 3] = torch.tensor([220.0, 60.0, 90.0])[:, None, None]
        out.append(img)
    return out


class _Recorder:
    """Captures, per frame, the ViT output, the pyramid features and the RPN head outputs of a model."""

    def __init__(self, model) -> None:
        self.model = model
        self.vit = None
        self.feats: Dict[str, torch.Tensor] = {}
        self.rpn = None
        self.roi = None
        model.backbone.net.register_forward_hook(lambda m, i, o: setattr(self, "vit", o))
        model.backbone.register_forward_hook(lambda m, i, o: setattr(self, "feats", o))
        head = model.streaming_rpn.head

        def recorded(feats, states):
            self.rpn = head(feats, states)
            return self.rpn

        model.streaming_rpn.head = recorded
        detect = model.streaming_roi_heads.detect

        def recorded_detect(images, features, proposals, states):
            self.roi = (images, features, proposals, detect(images, features, proposals, states))
            return self.roi[-1]

        model.streaming_roi_heads.detect = recorded_detect

    def dense_reference(self):
        """The stock pyramid and RPN head on this frame's ViT output."""
        bb = self.model.backbone
        x = self.vit[bb.in_feature]
        results = [stage(x) for stage in bb.stages]
        results.extend(bb.top_block(results[bb._out_features.index(bb.top_block.in_feature)]))
        feats = dict(zip(bb._out_features, results))
        rpn = self.model.proposal_generator
        return feats, rpn.rpn_head([feats[f] for f in rpn.in_features])


def _assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    d = (a - b).abs().max().item()
    assert a.shape == b.shape and d <= ATOL * max(1.0, b.abs().max().item()), f"{what}: {d}"
    return d


@pytest.mark.parametrize("height", [72, 128], ids=["padded", "unpadded"])
def test_incremental_head_equals_dense_head_over_many_frames(tiny_weights, height):
    """Three streams, the third starting 3 frames later (batches mix first, pruned and reset frames): every frame's
    pyramid features and RPN outputs equal the stock dense head's on the same backbone output."""
    model = _model(True, tiny_weights)
    rec = _Recorder(model)
    videos = [_frames(22, height, 128, seed) for seed in range(3)]
    seen = {"first": 0, "pruned": 0, "reset": 0}
    incremental = 0
    with torch.inference_mode():
        for t in range(22):
            batch = []
            for v, frames in enumerate(videos):
                f = t - 3 * (v == 2)
                if f >= 0:
                    img = frames[f]
                    batch.append(
                        {"image": img, "height": height, "width": 128, "video_id": f"v{v}"}
                    )
                    batch[-1]["frame_index"] = f
            outs = model(batch)
            states = [model.stream_state(x["video_id"]) for x in batch]
            changes = model.backbone.changed_regions(states)
            for o, ch in zip(outs, changes):
                seen[o["rgtp"]["frame_type"]] += 1
                incremental += ch is not None
                assert (ch is None) == (o["rgtp"]["frame_type"] != "pruned")
            ref_feats, (ref_logits, ref_deltas) = rec.dense_reference()
            for k, v in ref_feats.items():
                _assert_close(rec.feats[k], v, f"frame {t} {k}")
            logits, deltas = rec.rpn
            for i, (a, b) in enumerate(zip(logits + deltas, ref_logits + ref_deltas)):
                _assert_close(a, b, f"frame {t} rpn output {i}")
            images, feats, proposals, results = rec.roi
            ref_results = model.roi_heads(images, feats, proposals, None)[0]  # the stock ROI heads
            for r, ref in zip(results, ref_results):
                assert torch.equal(r.pred_classes, ref.pred_classes), f"frame {t}"
                _assert_close(r.scores, ref.scores, f"frame {t} scores")
                _assert_close(r.pred_boxes.tensor, ref.pred_boxes.tensor, f"frame {t} boxes")
    assert seen["first"] == 3 and seen["reset"] >= 5 and seen["pruned"] >= 50
    assert incremental == seen["pruned"]
    assert model.streaming_roi_heads.reused > 0


def test_detections_equal_the_dense_head_path(tiny_weights):
    """Two models in lockstep, incremental head on and off: the same kept tokens on every frame, and the same
    detections to float rounding; the counted head FLOPs drop on pruned frames only."""
    on, off = _model(True, tiny_weights), _model(False, tiny_weights)
    frames = _frames(18, 72, 128, seed=5)
    saved = 0.0
    with torch.inference_mode():
        for t, img in enumerate(frames):
            inp = [{"image": img, "height": 72, "width": 128, "video_id": "v", "frame_index": t}]
            a, b = on(inp)[0], off(inp)[0]
            sa, sb = on.stream_state("v"), off.stream_state("v")
            assert (sa.kept is None) == (sb.kept is None)
            if sa.kept is not None:
                assert torch.equal(sa.kept, sb.kept)
            ia, ib = a["instances"], b["instances"]
            assert torch.equal(ia.pred_classes, ib.pred_classes)
            torch.testing.assert_close(ia.scores, ib.scores, rtol=0, atol=1e-5)
            torch.testing.assert_close(
                ia.pred_boxes.tensor, ib.pred_boxes.tensor, rtol=0, atol=1e-3
            )
            ra, rb = a["rgtp"], b["rgtp"]
            assert ra["gflops_head_dense"] == pytest.approx(rb["gflops_head_dense"])
            assert rb["gflops_head_executed"] == pytest.approx(rb["gflops_head_dense"])
            if ra["frame_type"] == "pruned":
                assert ra["gflops_head_executed"] < ra["gflops_head_dense"]
                saved += ra["gflops_head_dense"] - ra["gflops_head_executed"]
            else:
                assert ra["gflops_head_executed"] == pytest.approx(ra["gflops_head_dense"])
    assert saved > 0
    # the box head ran on part of the proposals only, and the dense-head model on all of them
    roi_on, roi_off = on.streaming_roi_heads, off.streaming_roi_heads
    assert roi_on.enabled and not roi_off.enabled and roi_off.reused == 0
    assert 0 < roi_on.reused < roi_on.computed


def test_caches_made_under_another_autocast_are_not_reused(tiny_weights):
    """A frame run under bf16 autocast after fp32 frames (and back) restarts the stream (its backbone caches are of
    another precision) and recomputes the whole head; the frames after it are pruned and incremental again.
    """
    model = _model(True, tiny_weights)
    frames = _frames(6, 72, 128, seed=4)
    autocast = [False, False, True, True, False, False]
    with torch.inference_mode():
        for t, (img, on) in enumerate(zip(frames, autocast)):
            inp = [{"image": img, "height": 72, "width": 128, "video_id": "v", "frame_index": t}]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                st = model(inp)[0]["rgtp"]
            if t == 0:
                continue
            switched = autocast[t] != autocast[t - 1]
            assert st["frame_type"] == ("first" if switched else "pruned"), t
            dense = st["gflops_head_executed"] == pytest.approx(st["gflops_head_dense"])
            assert dense == switched, (t, st["gflops_head_executed"], st["gflops_head_dense"])


def test_caches_are_released_with_the_streams(tiny_weights):
    model = _model(True, tiny_weights)
    with torch.inference_mode():
        for t, img in enumerate(_frames(3, 72, 128, seed=1)):
            model([{"image": img, "height": 72, "width": 128, "video_id": "v", "frame_index": t}])
    state = model.stream_state("v")
    assert model.backbone.cache_bytes(state) > 0 and model.streaming_rpn.cache_bytes(state) > 0
    assert model.streaming_roi_heads.cache_bytes(state) > 0
    del state
    model.reset_streams()
    gc.collect()
    assert len(model.backbone.head_caches) == 0


def test_config_key_is_validated_and_unsupported_pyramids_refused():
    cfg = tiny_cfg()
    cfg.MODEL.RGTP.INCREMENTAL_HEAD = "yes"  # yacs would refuse it from a file or the command line
    with pytest.raises(ConfigError, match="MODEL.RGTP.INCREMENTAL_HEAD"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="INCREMENTAL_HEAD"):
        build_model(tiny_cfg(opts=["MODEL.VIT.PYRAMID_NORM", "GN"]))
    off = build_model(
        tiny_cfg(opts=["MODEL.VIT.PYRAMID_NORM", "GN", "MODEL.RGTP.INCREMENTAL_HEAD", False])
    )
    assert not off.backbone.incremental and not off.streaming_rpn.enabled
    # a head the incremental path cannot reuse is refused, not silently run densely
    with pytest.raises(ConfigError, match="INCREMENTAL_HEAD=True.*ROI heads"):
        build_model(tiny_cfg(opts=["MODEL.MASK_ON", True]))
    masks = build_model(
        tiny_cfg(opts=["MODEL.MASK_ON", True, "MODEL.RGTP.INCREMENTAL_HEAD", False])
    )
    assert not masks.streaming_roi_heads.enabled


# ------------------------------------------------------------------------------------------ ROI heads
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale", [1 / 4, 1 / 16])
def test_roi_align_reads_only_inside_the_support(aligned, scale):
    """Oracle: detectron2's ROIAlign itself. Noise written everywhere outside a box's support leaves its pooled
    features unchanged; the support is at most the sampled span plus a margin of two pixels on each side.
    """
    g = torch.Generator().manual_seed(3)
    h, w = 23, 31
    align = ROIAlign((7, 7), scale, 0, aligned=aligned)
    fmap = torch.randn(1, 4, h, w, generator=g)
    size = torch.tensor([w, h, w, h]) / scale
    xy = torch.rand(40, 2, generator=g) * size[:2] * 0.9
    wh = torch.rand(40, 2, generator=g) * size[:2] * torch.tensor([0.5, 0.5]) + 0.3 / scale
    boxes = torch.cat([xy, (xy + wh).minimum(size[:2])], 1)
    boxes[:4, 2:] = boxes[:4, :2] + 0.2  # smaller than a pixel of the level
    y0, y1, x0, x1 = support_rects(boxes, align, h, w)
    rows = torch.cat([torch.zeros(40, 1), boxes], 1)
    ref = align(fmap, rows)
    for i in range(40):
        noisy = torch.randn(1, 4, h, w, generator=g) * 100
        noisy[..., y0[i] : y1[i], x0[i] : x1[i]] = fmap[..., y0[i] : y1[i], x0[i] : x1[i]]
        assert torch.equal(align(noisy, rows[i : i + 1])[0], ref[i]), i
        lo = boxes[i, :2] * scale - (0.5 if aligned else 0.0)
        span = (boxes[i, 2:] - boxes[i, :2]) * scale
        assert x1[i] - x0[i] <= min(w, int(span[0].clamp(min=1)) + 6)
        assert y1[i] - y0[i] <= min(h, int(span[1].clamp(min=1)) + 6)
        assert x0[i] >= max(0, int(lo[0].floor()) - 2)


def test_box_predictions_are_reused_only_outside_changed_regions(tiny_weights):
    """The same proposals on two frames: a box whose support meets the changed region is computed again (its
    pooled features changed: a stale reuse would differ from the dense ROI heads), the others are reused.
    """
    model = _model(True, tiny_weights)
    frames = _frames(2, 72, 128, seed=2)
    roi = model.streaming_roi_heads
    captured = {}
    proposals_of = model.streaming_rpn.proposals

    def fixed(images, features, states):
        props = proposals_of(images, features, states)
        if "p" not in captured:
            captured["p"] = props
        return captured["p"]  # the first frame's proposals on both frames

    model.streaming_rpn.proposals = fixed
    features = {}
    model.backbone.register_forward_hook(lambda m, i, o: features.update(o))
    with torch.inference_mode():
        for t, img in enumerate(frames):
            inp = [{"image": img, "height": 72, "width": 128, "video_id": "v", "frame_index": t}]
            before = (roi.reused, roi.computed)
            out = model(inp)[0]["instances"]
        state = model.stream_state("v")
        assert state.frame_type.value == "pruned"
        images = model.preprocess_image(inp)
        ref = model.roi_heads(images, features, captured["p"], None)[0][0]
    reused, computed = roi.reused - before[0], roi.computed - before[1]
    n = len(captured["p"][0])
    assert reused + computed == n and 0 < reused < n
    # the detections equal the stock ROI heads' on this frame's features and proposals
    assert torch.equal(out.pred_classes, ref.pred_classes)
    torch.testing.assert_close(out.scores, ref.scores, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ regions
def test_rects_cover_the_changed_tiles_once():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(37, 45, generator=g) > 0.93
    for tile in (1, 4, 8):
        rs, cover = rects(mask, tile)
        hit = torch.zeros(37, 45, dtype=torch.int32)
        for y0, y1, x0, x1 in rs:
            hit[y0:y1, x0:x1] += 1
        assert hit.max() == 1  # no overlaps
        assert bool((hit[mask] == 1).all())  # every changed pixel covered
        assert cover == pytest.approx(hit.sum().item() / hit.numel())
        rs0, cover0 = rects(mask, tile, waste=0.0)  # exactly the changed tiles
        tiles = F.max_pool2d(mask[None, None].float(), tile, tile, ceil_mode=True)[0, 0]
        assert len(rs0) >= len(rs) and cover0 <= cover
        assert cover0 * mask.numel() <= tiles.sum().item() * tile * tile
    two = torch.zeros(64, 64, dtype=torch.bool)
    # two far apart clusters: two rectangles, not one box
    two[2:10, 3:12] = two[40:60, 44:63] = True
    rs, cover = rects(two, 4)
    assert len(rs) == 2 and cover < 0.15


def test_conv_on_rects_equals_the_dense_conv_at_borders_and_inside():
    torch.manual_seed(0)
    conv = Conv2d(6, 5, 3, padding=1, activation=torch.nn.ReLU()).eval()
    maps = [torch.randn(6, 13, 17) for _ in range(3)]
    dense = conv(torch.stack(maps))
    rect_lists = [[(0, 4, 0, 6), (9, 13, 11, 17)], [(0, 4, 0, 6)], [(5, 8, 3, 9)]]
    counter = HeadFlopCounter()
    with counter:
        got = list(run_on_rects(conv, maps, rect_lists))
    assert len(got) == 3  # the shared rectangle ran once, for both streams
    for (y0, y1, x0, x1), idx, out in got:
        for k, i in enumerate(idx):
            torch.testing.assert_close(out[k], dense[i, :, y0:y1, x0:x1], rtol=1e-5, atol=1e-6)
    assert counter.executed == sum(
        len(idx) * 5 * (r[1] - r[0]) * (r[3] - r[2]) * 6 * 9 for r, idx, _ in got
    )


def test_change_masks_grow_with_the_receptive_field():
    kept = [torch.tensor([0, 9]), torch.tensor([63])]
    m = token_masks(kept, (8, 8), torch.device("cpu"))
    assert m.shape == (2, 8, 8) and m[0, 0, 0] and m[0, 1, 1] and m[1, 7, 7] and m.sum() == 3
    d = dilate(m, 1)
    assert d[1].sum() == 4 and d[0, 2, 2] and not d[0, 3, 3]
