"""The embedded demo (``tools/demo.py``, run by ``make demo``) on a cut-down slice: the small data of
``prepare_demo.py --small``, the first video of each val set, every config of both tasks, the committed checkpoints.

Checks the table's fields (keys, types, ranges), that the speed-ups are the ratios of the measured times, and that the
JSON and the plot are written."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINTS = [
    "models/demo/vitdet_demo.pth",
    "models/demo/vivit_demo.pyth",
    "models/demo/vivit_demo_keep14.pyth",
]


def _load_demo():
    spec = importlib.util.spec_from_file_location(
        "rgtp_tools_demo", os.path.join(REPO, "tools", "demo.py")
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    missing = [p for p in CHECKPOINTS if not os.path.isfile(os.path.join(REPO, p))]
    if missing:
        pytest.fail(f"demo checkpoints missing (see docs/demo.md): {missing}")
    demo = _load_demo()
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    args = demo.parse_args(
        ["--small", "--root", str(tmp / "data"), "--out", str(out), "--max-videos", "1"]
    )
    results = demo.run_demo(args)
    return demo, results, out


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
    demo, results, _ = demo_run
    rows = results["detection"]
    _check_common(rows, "ms_per_frame", [n for n, _ in demo.DET_CONFIGS])
    frames = rows[0]["frames"]
    assert frames > 0 and all(r["frames"] == frames for r in rows)
    for r in rows:
        assert 0.0 <= r["map50"] <= 1.0 and 0.0 <= r["map50_devkit"] <= 1.0
        assert r["map50_drop_points"] == pytest.approx(100 * (rows[0]["map50"] - r["map50"]))
    assert rows[0]["frames_pruned"] == 0
    assert all(r["frames_pruned"] > 0 for r in rows[1:])
    assert {r["selection"] for r in rows[1:]} == {"rollout", "random"}


def test_demo_recognition_table(demo_run):
    demo, results, _ = demo_run
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
    demo, results, out = demo_run
    with open(out / "demo_results.json") as f:
        saved = json.load(f)
    assert saved["small_data"] is True and saved["max_videos"] == 1
    assert saved["detection"] == json.loads(json.dumps(results["detection"]))
    assert set(saved["checkpoints_sha256"]) == set(CHECKPOINTS)
    png = out / "tradeoff.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = demo.format_table(results["recognition"], "recognition")
    assert "speed-up" in table and "rgtp_keep14" in table
