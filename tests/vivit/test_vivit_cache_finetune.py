"""Spatial-feature cache (atomic, resumable) and the temporal fine-tune on it (lower loss, checkpoints, resume)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rgtp_vivit.cache as cache_mod
import torch
from rgtp_vivit.cache import cache_path, run_cache
from rgtp_vivit.checkpoint import checkpoint_path
from rgtp_vivit.train_net import train
from vivit_helpers import TINY_KINETICS, cfg_from


def _cfg(root, out, *opts):
    return cfg_from(
        ["configs/kinetics/keep_049.yaml"],
        TINY_KINETICS
        + ["DATA.PATH_TO_DATA_DIR", str(root), "OUTPUT_DIR", str(out), "CACHE.SPLITS", "['val']",
           "TRAIN.SPLIT", "val", "TRAIN.VAL_SPLIT", "val", "TRAIN.BATCH_SIZE", "2", *opts],
    )  # fmt: skip


def test_cache_resumes_then_finetune_lowers_the_loss(kinetics_root, tmp_path, monkeypatch):
    cfg = _cfg(kinetics_root, tmp_path, "SOLVER.BASE_LR", "3e-3", "SOLVER.MAX_EPOCH", "3")
    saved = []
    real_save = cache_mod.atomic_save_npz

    def crash_on_third(path, **arrays):
        if len(saved) == 2:
            raise KeyboardInterrupt("simulated interruption")
        real_save(path, **arrays)
        saved.append(path)

    monkeypatch.setattr(cache_mod, "atomic_save_npz", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_cache(cfg)
    folder = os.path.dirname(saved[0])
    assert sorted(os.listdir(folder)) == sorted(
        os.path.basename(p) for p in saved
    )  # no partial files
    mtimes = {p: os.stat(p).st_mtime_ns for p in saved}
    monkeypatch.setattr(cache_mod, "atomic_save_npz", real_save)
    stats = run_cache(cfg)["val"]
    assert stats == {"computed": 3, "reused": 2, "skipped": []}
    assert {p: os.stat(p).st_mtime_ns for p in saved} == mtimes  # finished videos were not redone
    with np.load(cache_path(cfg, "val", "vid00-a_x_000000_000001")) as z:
        assert z["spatial"].shape == (12, 4, 64) and int(z["label"]) == 0
    # the cached features are exactly what the pruned spatial model computes at test time
    from rgtp_vivit.datasets import Kinetics
    from rgtp_vivit.test_net import build_test_model

    model = build_test_model(cfg, "", torch.device("cpu"))
    with torch.no_grad():
        feats = model.spatial_features(Kinetics(cfg, "val")[0]["views"])
    with np.load(cache_path(cfg, "val", "vid00-a_x_000000_000001")) as z:
        np.testing.assert_allclose(z["spatial"], feats.numpy(), atol=1e-5)

    history = train(cfg)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all("val_top1" in h for h in history)
    ckpt = torch.load(checkpoint_path(str(tmp_path), 3), weights_only=False)
    assert ckpt["epoch"] == 3 and "optimizer_state" in ckpt
    assert "temporal.blocks.0.attn.qkv.weight" in ckpt["model_state"]
    # only the temporal model and the classifier changed
    start = build_test_model(cfg, "", torch.device("cpu")).state_dict()
    for k, v in ckpt["model_state"].items():
        assert torch.equal(v, start[k]) == (not k.startswith(("temporal.", "classifier."))), k

    # resume: two more epochs continue from epoch 3
    more = train(_cfg(kinetics_root, tmp_path, "SOLVER.BASE_LR", "3e-3", "SOLVER.MAX_EPOCH", "5"))
    assert [h["epoch"] for h in more] == [1, 2, 3, 4, 5]
    assert more[:3] == history
    assert os.path.exists(checkpoint_path(str(tmp_path), 5))


def test_full_training_lowers_the_loss_and_resumes(kinetics_root, tmp_path):
    """TRAIN.MODE full (end-to-end training, used by the demo) trains every parameter, writes checkpoints and
    resumes from the last one."""
    from rgtp_vivit.build import build_model
    from rgtp_vivit.train_full import train_full

    opts = [
        "TRAIN.MODE",
        "full",
        "SOLVER.BASE_LR",
        "1e-3",
        "SOLVER.MAX_EPOCH",
        "10",
        "TRAIN.EVAL_PERIOD",
        "10",
    ]
    cfg = _cfg(kinetics_root, tmp_path, *opts)
    torch.manual_seed(cfg.RNG_SEED)
    before = {k: v.clone() for k, v in build_model(cfg).state_dict().items()}
    history = train_full(cfg)
    assert [h["epoch"] for h in history] == list(range(1, 11))
    losses = [h["train_loss"] for h in history]
    assert sum(losses[-3:]) < sum(
        losses[:3]
    )  # 5 clips, augmented: compare epoch means, not single epochs
    state = torch.load(checkpoint_path(str(tmp_path), 10), weights_only=False)["model_state"]
    assert not torch.equal(
        state["spatial.blocks.0.attn.qkv.weight"], before["spatial.blocks.0.attn.qkv.weight"]
    )
    more = _cfg(
        kinetics_root, tmp_path, *opts[:-4], "SOLVER.MAX_EPOCH", "11", "TRAIN.EVAL_PERIOD", "11"
    )
    assert [h["epoch"] for h in train_full(more)] == list(
        range(1, 12)
    )  # resumed: 1-10 come from the log


def test_detector_adamw_option():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from rgtp_vitdet import add_rgtp_config
    from rgtp_vitdet.engine import RGTPTrainer

    cfg = get_cfg()
    add_rgtp_config(cfg)
    cfg.merge_from_file("configs/demo/vid_base.yaml")
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SOLVER.OPTIMIZER", "ADAMW"])
    model = build_model(cfg)
    assert isinstance(RGTPTrainer.build_optimizer(cfg, model), torch.optim.AdamW)
    cfg.SOLVER.OPTIMIZER = "SGD"
    assert isinstance(RGTPTrainer.build_optimizer(cfg, model), torch.optim.SGD)
