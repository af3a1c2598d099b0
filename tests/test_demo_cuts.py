"""Cut-aware resets with the committed demo detector on a small generated clip with one hard cut at a known frame:
with ``configs/demo/vid_keep64_cuts.yaml`` the schedule resets on the cut frame (cause ``cut``) and nowhere else
beyond the periodic resets; with the setting off (``MODEL.RGTP.CUT_THRESHOLD -1``) the schedule is the periodic one,
and the frames before the cut are computed identically either way."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from rgtp_apps import demo_shapes
from rgtp_apps.demo_detection import det_cfg, repo_path

CONFIG = "configs/demo/vid_keep64_cuts.yaml"
CUT = 5  # the first frame of the second shot: not a periodic reset (period 8)
FRAMES = 12


def _clip() -> list:
    """Two unrelated generated scenes (192x192, the demo's frame size) joined by a hard cut at frame CUT."""
    a = demo_shapes.render_vid_snippet(np.random.default_rng([7, 0]), CUT, 192, 192, first_cls=0)
    b = demo_shapes.render_vid_snippet(
        np.random.default_rng([7, 1]), FRAMES - CUT, 192, 192, first_cls=2
    )
    return [f.image for f in a + b]


def _run(opts, tmp_path) -> list:
    from rgtp_vitdet.predictor import VideoPredictor

    cfg = det_cfg(CONFIG, opts, str(tmp_path))
    predictor = VideoPredictor(cfg, input_format="RGB")
    log = []
    with torch.no_grad():
        for frame in _clip():
            out = predictor(frame)
            state = predictor.state()
            log.append(
                {
                    "type": out["frame_type"],
                    "cause": state.reset_cause,
                    "quality": state.match_quality,
                    "kept": None if out["kept"] is None else out["kept"].tolist(),
                    "boxes": out["instances"].pred_boxes.tensor,
                }
            )
    return log


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not os.path.isfile(repo_path("models/demo/vitdet_demo.pth")):
        pytest.fail("demo checkpoint models/demo/vitdet_demo.pth missing (see docs/demo.md)")
    pytest.importorskip("rgtp_vitdet")
    tmp = tmp_path_factory.mktemp("cuts")
    return _run([], tmp / "on"), _run(["MODEL.RGTP.CUT_THRESHOLD", "-1.0"], tmp / "off")


def test_config_sets_a_threshold():
    cfg = det_cfg(CONFIG, [], "/tmp")
    assert cfg.MODEL.RGTP.ENABLED and -1.0 < cfg.MODEL.RGTP.CUT_THRESHOLD < 1.0


def test_cut_aware_schedule_resets_on_the_cut_frame_only(runs):
    on, _ = runs
    expected = ["first"] + ["pruned"] * (CUT - 1) + ["reset"] + ["pruned"] * 2 + ["reset"]
    expected += ["pruned"] * (FRAMES - len(expected))
    assert [f["type"] for f in on] == expected
    causes = {t: f["cause"] for t, f in enumerate(on) if f["type"] == "reset"}
    assert causes == {CUT: "cut", 8: "period"}
    assert on[CUT]["kept"] is None  # processed fully
    # the check ran on every pruned frame, and the cut frame matches its predecessor far worse than any other
    checked = [t for t, f in enumerate(on) if f["quality"] is not None]
    assert checked == sorted([t for t, f in enumerate(on) if f["type"] == "pruned"] + [CUT])
    others = [on[t]["quality"] for t in checked if t != CUT]
    assert on[CUT]["quality"] < min(others)


def test_with_the_setting_off_the_schedule_is_the_periodic_one(runs):
    on, off = runs
    expected = ["first"] + ["pruned"] * 7 + ["reset"] + ["pruned"] * (FRAMES - 9)
    assert [f["type"] for f in off] == expected
    assert [f["cause"] for f in off] == [None] * 8 + ["period"] + [None] * (FRAMES - 9)
    assert all(f["quality"] is None for f in off)  # the check never runs when it is off
    # before the cut both runs compute the same tokens and the same detections
    for a, b in zip(on[:CUT], off[:CUT]):
        assert a["kept"] == b["kept"]
        assert torch.equal(a["boxes"], b["boxes"])
