"""The embedded demo (:mod:`rgtp_apps.demo`, ``tools/demo.py``, run by ``make demo``) on a cut-down slice: the small
data of ``prepare_demo.py --small``, the first video of each val set (and of the val videos with cuts), every config
of both tasks, the committed checkpoints.

Checks the table's fields (keys, types, ranges), that the speed-ups are the ratios of the measured times, that the
JSON, the plot and the log are written, and that the screen gets only the tables and where the files went.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

import pytest
from rgtp_apps import demo
from rgtp_apps.demo_detection import repo_path

CHECKPOINTS = list(demo.CHECKPOINTS)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    missing = [p for p in CHECKPOINTS if not os.path.isfile(repo_path(p))]
    if missing:
        pytest.fail(f"demo checkpoints missing (see docs/demo.md): {missing}")
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    args = demo.parse_args(
        ["--small", "--root", str(tmp / "data"), "--out", str(out), "--max-videos", "1"]
    )
    screen = tmp / "screen.txt"
    with open(screen, "w") as f, contextlib.redirect_stdout(f):
        results = demo.run_demo(args)
    return demo, results, out, screen.read_text()


def _check_common(rows, time_key, names):
    assert [r["config"] for r in rows] == names
    dense = rows[0]
    assert dense["selection"] == "dense" and dense["kept_tokens"] == dense["tokens"]
    assert dense["speedup"] == pytest.approx(1.0)
    assert dense["gflops_ratio"] == pytest.approx(1.0)
    for r in rows:
        for key in ("gflops_paper", "gflops_executed", time_key, "wall_s", "speedup"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert isinstance(r["kept_tokens"], int) and 1 <= r["kept_tokens"] <= r["tokens"]
        assert r["kept_fraction"] == pytest.approx(r["kept_tokens"] / r["tokens"])
        # the speed-up is computed from the times measured in this run
        assert r["speedup"] == pytest.approx(dense[time_key] / r[time_key])
        assert r["gflops_ratio"] == pytest.approx(r["gflops_paper"] / dense["gflops_paper"])
    for r in rows[1:]:
        assert r["kept_fraction"] <= 0.4
        # pruning cuts the counted FLOPs (full first frame included)
        assert r["gflops_paper"] < dense["gflops_paper"]
        assert r["gflops_executed"] < dense["gflops_executed"]


def test_demo_detection_table(demo_run):
    demo, results, *_ = demo_run
    rows = results["detection"]
    _check_common(rows, "ms_per_frame", [n for n, _ in demo.DET_CONFIGS])
    frames = rows[0]["frames"]
    assert frames > 0 and all(r["frames"] == frames for r in rows)
    for r in rows:
        assert 0.0 <= r["map50"] <= 1.0 and 0.0 <= r["map50_devkit"] <= 1.0
        assert r["map50_drop_points"] == pytest.approx(100 * (rows[0]["map50"] - r["map50"]))
    assert rows[0]["frames_pruned"] == 0
    assert all(r["frames_pruned"] > 0 for r in rows[1:])
    assert {r["selection"] for r in rows[1:]} == {"rollout", "change", "random"}
    assert all(r["resets_cut"] == 0 and r["cut_threshold"] is None for r in rows)


def test_demo_detection_table_on_videos_with_cuts(demo_run):
    demo, results, *_ = demo_run
    rows = results["detection_cuts"]
    _check_common(rows, "ms_per_frame", [n for n, _ in demo.DET_CUT_CONFIGS])
    assert all(r["dataset"] == "vid_val_cuts" and r["videos"] == 1 for r in rows)
    dense, periodic, cut_aware = rows
    assert dense["resets_period"] == dense["resets_cut"] == 0  # the dense model has no schedule
    assert periodic["cut_threshold"] is None and periodic["resets_cut"] == 0
    assert cut_aware["cut_threshold"] is not None
    # a cut reset replaces a pruned frame: never fewer full frames than with periodic resets only
    assert cut_aware["resets_period"] <= periodic["resets_period"]
    assert cut_aware["frames_full"] == periodic["frames_full"] + cut_aware["resets_cut"] - (
        periodic["resets_period"] - cut_aware["resets_period"]
    )
    assert results["cuts_in_val"] == cut_aware["cuts"] >= 1
    assert cut_aware["resets_cut_on_cuts"] <= cut_aware["resets_cut"]
    assert periodic["resets_cut_on_cuts"] == 0


def test_demo_recognition_table(demo_run):
    demo, results, *_ = demo_run
    rows = results["recognition"]
    _check_common(rows, "ms_per_clip", [n for n, _, _ in demo.REC_CONFIGS])
    for r in rows:
        assert r["videos"] == 1
        assert 0.0 <= r["top1"] <= 1.0
        assert len(r["kept_per_tubelet"]) >= 2
    for r in rows[1:]:
        assert r["kept_per_tubelet"][0] == r["tokens"]  # full first tubelet
        assert min(r["kept_per_tubelet"][1:]) == r["kept_tokens"]


def test_demo_outputs_written(demo_run):
    demo, results, out, screen = demo_run
    with open(out / "demo_results.json") as f:
        saved = json.load(f)
    assert saved["small_data"] is True and saved["max_videos"] == 1
    assert saved["detection"] == json.loads(json.dumps(results["detection"]))
    assert set(saved["checkpoints_sha256"]) == set(CHECKPOINTS)
    png = out / "tradeoff.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = demo.format_table(results["recognition"], "recognition")
    assert "speed-up" in table and "rgtp_keep14" in table and "change_keep14" in table
    log = (out / "demo.log").read_text()
    assert "RGTPVideoRCNN(" in log and "Per-class AP" in log  # the details are in the log ...


def test_demo_screen_is_one_screen(demo_run):
    _, _, out, screen = demo_run
    lines = screen.splitlines()
    assert len(lines) <= 60, screen
    # ... and not on the screen
    for noise in ("RGTPVideoRCNN(", "Per-class AP", "Warning", "CUDA is not available", "INFO"):
        assert noise not in screen, noise
    assert "rgtp_keep64_cuts" in screen and "change_keep64" in screen
    assert str(out / "demo.log") in screen
