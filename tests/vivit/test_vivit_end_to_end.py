"""tools/vivit_net.py end to end on tiny Kinetics- and EPIC-format sets (real mp4 files, real-format CSVs); two
processes give the same results as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from vivit_helpers import REPO, TINY_EPIC, TINY_KINETICS


def _run(cfg, tiny, root, out, *opts):
    cmd = [sys.executable, str(REPO / "tools" / "vivit_net.py"), "--cfg", cfg, *tiny,
           "DATA.PATH_TO_DATA_DIR", str(root), "OUTPUT_DIR", str(out), *opts]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "results.json") as f:
        return proc.stdout, json.load(f)


def _same(a, b):
    for key in ("num_videos", "top1", "top5", "mean_class_accuracy", "noun_top1", "action_top1"):
        assert a.get(key) == b.get(key), key
    assert [p["key"] for p in a["predictions"]] == [p["key"] for p in b["predictions"]]
    for p, q in zip(a["predictions"], b["predictions"]):
        assert p["pred"] == q["pred"]
        assert p["scores"] == pytest.approx(q["scores"], abs=1e-5)
    assert a["tflops_per_video_paper"] == b["tflops_per_video_paper"]
    assert a["tflops_per_video_executed"] == pytest.approx(b["tflops_per_video_executed"])


@pytest.mark.parametrize(
    "cfg, tiny, root_fixture, n",
    [
        ("configs/kinetics/keep_049.yaml", TINY_KINETICS, "kinetics_root", 5),
        ("configs/epic/fg_160s05_bg_009.yaml", TINY_EPIC, "epic_root", 4),
    ],
)
def test_vivit_net_test_one_and_two_processes(cfg, tiny, root_fixture, n, request, tmp_path):
    root = request.getfixturevalue(root_fixture)
    stdout, one = _run(cfg, tiny, root, tmp_path / "one")
    assert "top1" in stdout and "top5" in stdout and "TFLOPs/video" in stdout
    assert one["num_videos"] == n and one["skipped"] == []
    assert 0.0 <= one["top1"] <= 100.0 and one["top1"] <= one["top5"]
    assert one["tflops_per_video_paper"] > 0 and one["videos_per_second"] > 0
    assert one["tflops_per_video_paper_measured"] == pytest.approx(one["tflops_per_video_paper"])
    if "epic" in cfg:
        assert "noun_top1" in one and "action_top1" in one and "noun_top1" in stdout
        # ViViT wastes nothing: both counts are equal (both include the noun head)
        assert one["tflops_per_video_executed"] == pytest.approx(one["tflops_per_video_paper"])
    _, two = _run(cfg, tiny, root, tmp_path / "two", "NUM_GPUS", "2")
    _same(one, two)
    # the ensembling is configurable: PySlowFast's sum of softmax scores differ from the mean of logits
    _, soft = _run(cfg, tiny, root, tmp_path / "soft", "TEST.ENSEMBLE_METHOD", "sum_softmax")
    assert soft["predictions"][0]["scores"] != pytest.approx(one["predictions"][0]["scores"])
    assert sum(soft["predictions"][0]["scores"]) == pytest.approx(12.0)
