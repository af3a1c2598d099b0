"""The backbone, the video meta-architecture and checkpoints on a tiny random-weight model."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_model
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT
from rgtp_vitdet import CheckpointError, RGTPCheckpointer, convert_state_dict
from rgtp_vitdet.data import VIDTestMapper, build_vid_test_loader
from torch import nn
from vitdet_helpers import tiny_cfg

if "build_plain_d2_vitdet_backbone" not in BACKBONE_REGISTRY:

    @BACKBONE_REGISTRY.register()
    def build_plain_d2_vitdet_backbone(cfg, input_shape: ShapeSpec):
        """detectron2's own ViTDet backbone (ViT + SimpleFeaturePyramid) with the shape of MODEL.VIT.*."""
        v = cfg.MODEL.VIT
        net = ViT(
            img_size=v.IMG_SIZE,
            patch_size=v.PATCH_SIZE,
            embed_dim=v.EMBED_DIM,
            depth=v.DEPTH,
            num_heads=v.NUM_HEADS,
            mlp_ratio=v.MLP_RATIO,
            qkv_bias=True,
            use_abs_pos=True,
            use_rel_pos=True,
            window_size=v.WINDOW_SIZE,
            window_block_indexes=tuple(v.WINDOW_BLOCK_INDEXES),
            pretrain_img_size=v.PRETRAIN_IMG_SIZE,
            out_feature=v.OUT_FEATURE,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),  # as detectron2's ViTDet configs
        )
        return SimpleFeaturePyramid(
            net,
            v.OUT_FEATURE,
            v.PYRAMID_CHANNELS,
            (4.0, 2.0, 1.0, 0.5),
            top_block=LastLevelMaxPool(),
            norm="LN",
            square_pad=v.INPUT_SIZE,
        )


def _frames(vid_root, n=None, name="vid_val"):
    import os

    from detectron2.data import DatasetCatalog

    os.environ["RGTP_DATASETS"] = str(vid_root)
    dicts = DatasetCatalog.get(name)
    mapper = VIDTestMapper(tiny_cfg())
    return [mapper(d) for d in dicts[: n or len(dicts)]]


def _model(config="configs/vid/keep512.yaml", opts=(), weights=None):
    cfg = tiny_cfg(config, list(opts))
    torch.manual_seed(0)
    m = build_model(cfg)
    if weights is not None:
        RGTPCheckpointer(m, strict=True).load(str(weights))
    return m.eval()


def _run(model, frames, batch=1):
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            out += model(frames[i : i + batch])
    return out


def _same(a, b, exact=True):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        ix, iy = x["instances"], y["instances"]
        assert len(ix) == len(iy) > 0
        if exact:
            assert torch.equal(ix.pred_boxes.tensor, iy.pred_boxes.tensor)
            assert torch.equal(ix.scores, iy.scores)
        else:
            torch.testing.assert_close(
                ix.pred_boxes.tensor, iy.pred_boxes.tensor, rtol=1e-4, atol=1e-3
            )
            torch.testing.assert_close(ix.scores, iy.scores, rtol=1e-4, atol=1e-5)
        assert torch.equal(ix.pred_classes, iy.pred_classes)


def test_parameter_names_are_detectron2_vitdet():
    m = _model()
    keys = set(m.state_dict())
    for k in (
        "backbone.net.blocks.0.attn.qkv.weight",
        "backbone.net.blocks.1.attn.rel_pos_h",
        "backbone.net.patch_embed.proj.weight",
        "backbone.net.pos_embed",
        "backbone.simfp_2.0.weight",
        "backbone.simfp_5.1.norm.weight",
        "proposal_generator.rpn_head.conv.conv1.weight",
        "roi_heads.box_head.conv4.norm.weight",
        "roi_heads.box_head.fc1.weight",
        "roi_heads.box_predictor.cls_score.weight",
    ):
        assert k in keys, k
    assert m.roi_heads.box_predictor.cls_score.out_features == 31  # 30 VID classes + background


def test_plain_detectron2_vitdet_checkpoint_loads_and_matches(vid_root, tmp_path):
    cfg = tiny_cfg(
        "configs/vid/base.yaml",
        [
            "MODEL.META_ARCHITECTURE",
            "GeneralizedRCNN",
            "MODEL.BACKBONE.NAME",
            "build_plain_d2_vitdet_backbone",
        ],
    )
    torch.manual_seed(1)
    plain = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial weights everywhere (rel-pos tables are zero-initialised by detectron2)
        for name, p in plain.named_parameters():
            if "rel_pos" in name or "cls_score" in name:
                p.normal_(0, 0.5)
    path = tmp_path / "plain_vitdet.pth"
    torch.save({"model": plain.state_dict()}, path)
    frames = _frames(vid_root, 6)
    ref = _run(plain, [{k: v for k, v in f.items() if k != "video_id"} for f in frames])
    # detectron2's heads clip boxes to the frame: compare with the clean behaviour (the paper configs are official,
    # which clips to the padded canvas, tests/vitdet/test_vid_behaviour.py)
    clean = ["MODEL.RGTP.BEHAVIOUR", "clean"]
    ours = _model(
        "configs/vid/base.yaml", clean, weights=path
    )  # strict: raises on any missing/unexpected key
    assert set(ours.state_dict()) == set(plain.state_dict())
    got = _run(ours, frames)
    _same(got, ref)  # bit-identical detections with pruning off
    # the keep-all RGTP config loads the same checkpoint and also gives the same detections
    keepall = _model("configs/vid/keepall.yaml", clean, weights=path)
    _same(_run(keepall, frames), got)  # and keep-all equals our dense path exactly


def test_keep_all_equals_dense(vid_root, tiny_weights):
    frames = _frames(vid_root, 10)  # one video: first, 7 pruned, a reset frame, pruned
    dense = _run(_model("configs/vid/base.yaml", weights=tiny_weights), frames)
    model = _model("configs/vid/keepall.yaml", weights=tiny_weights)
    kept = _run(model, frames)
    assert [o["rgtp"]["frame_type"] for o in kept] == ["first"] + ["pruned"] * 7 + [
        "reset",
        "pruned",
    ]
    _same(kept, dense)
    # ...and a real pruning config does change the pruned frames (the check above could fail)
    pruned = _run(_model("configs/vid/keep512.yaml", weights=tiny_weights), frames)
    _same(pruned[:1], dense[:1])
    assert any(
        not torch.equal(p["instances"].scores, d["instances"].scores) for p, d in zip(pruned, dense)
    )
    assert pruned[1]["rgtp"]["gflops_paper"] < dense[1]["rgtp"]["gflops_paper"]
    assert pruned[1]["rgtp"]["gflops_executed"] < pruned[1]["rgtp"]["gflops_paper"]


def _close_detections(a, b):
    """Equal up to float rounding of batched matmuls: the same sorted scores, and every confident detection of one
    has a twin (same class, same box) in the other (near-tied low scores may swap places)."""
    ia, ib = a["instances"], b["instances"]
    torch.testing.assert_close(ia.scores.sort().values, ib.scores.sort().values, rtol=0, atol=1e-5)
    conf = ia.scores > 0.1
    assert conf.any()
    for box, cls in zip(ia.pred_boxes.tensor[conf], ia.pred_classes[conf]):
        d = (ib.pred_boxes.tensor - box).abs().amax(dim=1)
        assert ((d < 1e-3) & (ib.pred_classes == cls)).any()


def test_state_resets_per_video_and_batched_videos_equal_sequential(vid_root, tiny_weights):
    from detectron2.data import DatasetCatalog

    frames = _frames(vid_root)
    model = _model(weights=tiny_weights)
    seq = {}
    for f in frames:
        out = _run(model, [f])[0]
        st = model.stream_state(f["video_id"])
        seq[(f["video_id"], f["frame_index"])] = (out, st.kept, st.heatmap)
    types = {k: v[0]["rgtp"]["frame_type"] for k, v in seq.items()}
    assert [types[(v, f)] for v, f in seq if f == min(g for w, g in seq if w == v)] == ["first"] * 5
    assert (
        types[("ILSVRC2015_val_00002000#1", 6)] == "first"
    )  # the segment after the gap starts afresh
    assert types[("ILSVRC2015_val_00000000", 8)] == "reset"
    # two videos side by side, one frame of each per batch
    loader = build_vid_test_loader(tiny_cfg(opts=["TEST.VIDEOS_PER_BATCH", "2"]), "vid_val")
    model2 = _model(weights=tiny_weights)
    n = pruned = 0
    with torch.inference_mode():
        for batch in loader:
            assert len(batch) == 2 or n >= 20
            outs = model2(batch)
            for f, o in zip(batch, outs):
                ref, kept, heat = seq[(f["video_id"], f["frame_index"])]
                st = model2.stream_state(f["video_id"])
                assert o["rgtp"]["frame_type"] == ref["rgtp"]["frame_type"]
                if kept is not None:
                    assert torch.equal(st.kept, kept)  # the same tokens survive
                    pruned += 1
                torch.testing.assert_close(st.heatmap, heat, rtol=1e-5, atol=1e-7)
                _close_detections(o, ref)
                _close_detections(ref, o)
                n += 1
    assert n == len(DatasetCatalog.get("vid_val")) and pruned > 10


def test_training_mode_is_dense_vitdet(vid_root, monkeypatch):
    from detectron2.data import DatasetCatalog, DatasetMapper

    monkeypatch.setenv("RGTP_DATASETS", str(vid_root))
    cfg = tiny_cfg(
        "configs/vid/keep512.yaml", ["INPUT.MIN_SIZE_TRAIN", "(80,)", "INPUT.MAX_SIZE_TRAIN", "128"]
    )
    torch.manual_seed(0)
    model = build_model(cfg).train()
    dicts = DatasetCatalog.get("vid_val")[:2]
    batch = [DatasetMapper(cfg, is_train=True)(d) for d in dicts]
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        losses = model(batch)
    assert {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    sum(losses.values()).backward()
    assert model.backbone.net.blocks[0].attn.qkv.weight.grad is not None
    assert model.num_streams == 0  # no stream state in training


def test_partial_or_wrong_checkpoint_fails_with_key_list(tmp_path, tiny_weights):
    sd = torch.load(tiny_weights, weights_only=False)["model"]
    partial = {k: v for k, v in sd.items() if not k.startswith("roi_heads.box_head")}
    partial["backbone.net.blocks.0.attn.bogus"] = torch.zeros(1)
    partial["backbone.net.blocks.1.mlp.fc1.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"model": partial}, path)
    model = _model()
    with pytest.raises(CheckpointError) as e:
        RGTPCheckpointer(model, strict=True).load(str(path))
    msg = str(e.value)
    assert "roi_heads.box_head.conv1.weight" in msg and "backbone.net.blocks.0.attn.bogus" in msg
    assert "backbone.net.blocks.1.mlp.fc1.weight" in msg and "wrongly shaped" in msg
    RGTPCheckpointer(model, strict=False).load(str(path))  # non-strict loads what fits


def test_key_mapping_of_other_layouts(tmp_path, tiny_weights):
    sd = torch.load(tiny_weights, weights_only=False)["model"]
    # DDP prefix
    assert convert_state_dict({"module." + k: v for k, v in sd.items()}).keys() == sd.keys()
    # MAE-pretrained bare ViT: backbone keys only, class token and final norm dropped
    mae = {k[len("backbone.net.") :]: v for k, v in sd.items() if k.startswith("backbone.net.")}
    mae["cls_token"] = torch.zeros(1, 1, 64)
    mae["norm.weight"] = torch.ones(64)
    back = convert_state_dict(mae)
    assert set(back) == {k for k in sd if k.startswith("backbone.net.")}
    # Eventful/official RGTP converted names of the ViT
    ev = {}
    for k, v in sd.items():
        if k.startswith("backbone.net.blocks."):
            k2 = (
                k.replace("backbone.net.", "backbone.")
                .replace("attn.qkv", "qkv")
                .replace("norm1", "input_layer_norm")
                .replace("attn.rel_pos_h", "relative_position.y_embedding")
                .replace("attn.rel_pos_w", "relative_position.x_embedding")
                .replace("attn.proj", "projection")
                .replace("norm2", "mlp_layer_norm")
                .replace("mlp.fc1", "mlp_1")
                .replace("mlp.fc2", "mlp_2")
            )
            ev[k2] = v
        elif k == "backbone.net.patch_embed.proj.weight":
            ev["embedding.conv.weight"] = v
        elif k == "backbone.net.patch_embed.proj.bias":
            ev["embedding.conv.bias"] = v
        elif k == "backbone.net.pos_embed":
            ev["backbone.position_encoding.encoding"] = v[:, 1:]
    back = convert_state_dict(ev)
    net_keys = {k for k in sd if k.startswith("backbone.net.")}
    assert set(back) == net_keys
    for k in net_keys - {"backbone.net.pos_embed"}:
        assert torch.equal(back[k], sd[k]), k
    assert torch.equal(back["backbone.net.pos_embed"][:, 1:], sd["backbone.net.pos_embed"][:, 1:])


def test_convert_tool_maps_mae_and_rejects_wrong_keys(tmp_path, tiny_weights):
    import subprocess
    import sys

    from vitdet_helpers import REPO, TINY

    sd = torch.load(tiny_weights, weights_only=False)["model"]
    mae = {k[len("backbone.net.") :]: v for k, v in sd.items() if k.startswith("backbone.net.")}
    mae["cls_token"] = torch.zeros(1, 1, 64)
    torch.save({"model": mae}, tmp_path / "mae.pth")
    tool = [sys.executable, str(REPO / "tools/convert_vitdet_checkpoint.py")]
    cfg = ["--config-file", "configs/vid/base.yaml"]

    def run(*a):
        return subprocess.run([*tool, *a], cwd=REPO, capture_output=True, text=True)

    bad = run(str(tmp_path / "mae.pth"), str(tmp_path / "out.pth"), *cfg, *TINY)
    assert bad.returncode == 2 and "roi_heads.box_head.fc1.weight" in bad.stderr
    assert "error: the detector checkpoint does not fit the model of" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "out.pth").exists()  # nothing written on failure
    ok = run(str(tmp_path / "mae.pth"), str(tmp_path / "out.pth"), *cfg, "--partial", *TINY)
    assert ok.returncode == 0, ok.stderr
    out = torch.load(tmp_path / "out.pth", weights_only=False)["model"]
    assert set(out) == {k for k in sd if k.startswith("backbone.net.")}
