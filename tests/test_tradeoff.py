"""The trade-off plot (rgtp_apps.tradeoff, tools/plot_tradeoff.py, issue 16): panels by what the results are, the
paper's curve only beside results of the same data set and model, baselines as their own series, labels that do not
overlap, honest axes with the sample size, and the demo plot."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
from rgtp_apps import tradeoff as tr

REPO = Path(__file__).resolve().parents[1]


def _det(
    root: Path, name: str, gflops: float, ap50: float, frames: int = 320, config: str = ""
) -> Path:
    path = root / name / "inference" / "results_vid_val.json"
    path.parent.mkdir(parents=True)
    bbox = {
        "AP50": ap50,
        "gflops_paper": gflops,
        "gflops_executed": 0.95 * gflops,
        "frames": frames,
        "videos": 16,
    }
    path.write_text(json.dumps({"bbox": bbox}))
    if config:
        (root / name / "config.yaml").write_text(config)
    return path


def _rec(root: Path, name: str, tflops: float, top1: float, videos: int = 120) -> Path:
    path = root / name / "results.json"
    path.parent.mkdir(parents=True)
    res = {"dataset": "Kinetics", "split": "val", "num_videos": videos, "top1": top1,
           "tflops_per_video_paper": tflops, "tflops_per_video_executed": tflops}  # fmt: skip
    path.write_text(json.dumps(res))
    return path


DEMO = {
    "detection": [
        {"config": "dense", "config_file": "configs/demo/vid_base.yaml", "selection": "dense", "frames": 320,
         "map50": 0.800, "gflops_paper": 0.7657, "gflops_executed": 0.7657},
        {"config": "rgtp_keep96", "config_file": "configs/demo/vid_keep96.yaml", "selection": "rollout",
         "frames": 320, "map50": 0.787, "gflops_paper": 0.3974, "gflops_executed": 0.3788},
        {"config": "rgtp_keep64", "config_file": "configs/demo/vid_keep64.yaml", "selection": "rollout",
         "frames": 320, "map50": 0.788, "gflops_paper": 0.3235, "gflops_executed": 0.3012},
        {"config": "random_keep64", "config_file": "configs/demo/vid_keep64_random.yaml", "selection": "random",
         "frames": 320, "map50": 0.720, "gflops_paper": 0.3232, "gflops_executed": 0.3009},
        {"config": "change_keep64", "config_file": "", "selection": "change",
         "frames": 320, "map50": 0.75, "gflops_paper": 0.3240, "gflops_executed": 0.3010},
    ],
    "recognition": [
        {"config": "dense", "config_file": "configs/demo/kin_base.yaml", "selection": "dense", "videos": 120,
         "views_per_video": 2, "top1": 0.992, "gflops_paper": 0.1727, "gflops_executed": 0.1727},
        {"config": "rgtp_keep14_no_ft", "config_file": "configs/demo/kin_keep14.yaml", "selection": "rollout",
         "videos": 120, "views_per_video": 2, "top1": 0.992, "gflops_paper": 0.1016, "gflops_executed": 0.1016},
        {"config": "rgtp_keep14", "config_file": "configs/demo/kin_keep14.yaml", "selection": "rollout",
         "videos": 120, "views_per_video": 2, "top1": 0.975, "gflops_paper": 0.1016, "gflops_executed": 0.1016},
        {"config": "random_keep14", "config_file": "configs/demo/kin_keep14_random.yaml", "selection": "random",
         "videos": 120, "views_per_video": 2, "top1": 0.983, "gflops_paper": 0.1013, "gflops_executed": 0.1013},
    ],
}  # fmt: skip


def _legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def _no_overlaps(boxes):
    for a, b in combinations(boxes, 2):
        assert not tr._overlaps(a, b), (a, b)


def test_demo_points_get_demo_panels_series_and_sample_sizes():
    pts = tr.demo_points(DEMO)
    assert {p.dataset for p in pts} == {"demo VID (generated)", "demo Kinetics (generated)"}
    assert all(p.table is None for p in pts)  # never compared with the paper's ViT-B
    det = {p.label: p for p in pts if p.task == "detection"}
    assert det["random_keep64"].series == "random tokens (baseline)"
    assert det["change_keep64"].series == "change-based tokens (baseline)"
    assert det["rgtp_keep64"].series == "RGTP" and det["dense"].selection == "dense"
    assert det["rgtp_keep64"].model == "ViTDet, embed 192, 6 blocks, 256 px"
    rec = {p.label: p for p in pts if p.task == "recognition"}
    assert rec["rgtp_keep14_no_ft"].series == "RGTP, no fine-tune"
    assert rec["dense"].samples == "120 videos x 2 views" and rec[
        "dense"
    ].per_sample == pytest.approx(100 / 120)
    assert tr.select_reference(pts, "auto") == []


def test_demo_plot_panels_axes_and_labels(tmp_path):
    fig, boxes = tr._draw(tr.demo_points(DEMO), [])
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2
    titles = [ax.get_title() for ax in axes]
    assert "demo VID" in titles[0] and "n = 320 frames" in titles[0]
    assert "demo Kinetics" in titles[1] and "1 video = 0.83 points" in titles[1]
    assert not any("ImageNet" in t or "Kinetics-400" in t for t in titles)
    for ax in axes:
        lo, hi = ax.get_ylim()
        assert hi - lo >= 10 and hi <= 100 and ax.get_xlim()[0] == 0
        legend = _legend_texts(ax)
        assert "RGTP" in legend and "random tokens (baseline)" in legend
        assert "paper (published)" not in legend
    # the random baseline is not joined into the RGTP line: the RGTP line holds only rollout + dense points
    det_lines = {ln.get_label(): ln for ln in axes[0].get_lines()}
    assert sorted(det_lines["RGTP"].get_xdata().tolist()) == pytest.approx([0.3235, 0.3974, 0.7657])
    for b in boxes:
        _no_overlaps(b)
    written = tr.plot_demo(DEMO, str(tmp_path / "demo" / "tradeoff.png"))
    assert [Path(p).name for p in written] == ["tradeoff.png", "tradeoff.svg"]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["tradeoff.png", "tradeoff.svg"]
    only = tr.plot_demo(DEMO, str(tmp_path / "png" / "t.png"), svg=False)
    assert (
        only == [str(tmp_path / "png" / "t.png")] and len(list((tmp_path / "png").iterdir())) == 1
    )


def test_real_results_get_the_paper_curve_of_their_model_only(tmp_path):
    _det(tmp_path / "vid", "base", 174.5, 82.2)
    _det(tmp_path / "vid", "keep512", 72.6, 82.3)
    _det(tmp_path / "vid", "keep512_random", 72.6, 78.0)
    _det(tmp_path / "vid", "res1024_keep750", 152.4, 83.0)
    files = tr.find_results([str(tmp_path / "vid")])
    pts = [p for f in files for p in tr.read_points(f)]
    by = {p.label: p for p in pts}
    assert by["keep512"].panel == ("detection", "ImageNet VID", "ViTDet-B, 672")
    assert by["keep512"].samples == "320 frames, 16 videos"
    assert by["res1024_keep750"].table == "vitdet1024" and by["base"].selection == "dense"
    assert by["keep512_random"].series == "random tokens (baseline)"
    ref = tr.select_reference(pts, "auto")
    assert {r.table for r in ref} == {"vitdet672", "vitdet1024"}  # not Kinetics / EPIC
    fig, boxes = tr._draw(pts, ref)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("ImageNet VID — ViTDet-B, 672") and "1024" in titles[1]
    for b in boxes:
        _no_overlaps(b)
    assert tr.select_reference(pts, "never") == []


def test_results_that_are_not_the_papers_model_get_no_paper_curve(tmp_path):
    # tiny FLOPs, no config, no "demo" in the path: not ViTDet-B, so no reference and no paper title
    p = tr.read_points(str(_det(tmp_path / "runs", "keep64", 0.32, 78.8)))[0]
    assert p.table is None and "unknown" in p.model and tr.select_reference([p]) == []
    # a config beside the results says what the model is
    cfg = "MODEL:\n  VIT:\n    EMBED_DIM: 192\n    DEPTH: 6\n    INPUT_SIZE: 256\n  RGTP:\n    SELECTION: change\n"
    q = tr.read_points(str(_det(tmp_path / "runs2", "k64", 0.32, 78.8, config=cfg)))[0]
    assert (
        q.model == "ViTDet, embed 192, 6 blocks, 256 px"
        and q.table is None
        and q.selection == "change"
    )
    # recognition results of a demo run
    r = tr.read_points(
        str(_rec(tmp_path / "demo" / "recognition", "rgtp_keep14", 0.0001016, 97.5))
    )[0]
    assert (
        r.dataset == "demo Kinetics (generated)"
        and r.table is None
        and r.per_sample == pytest.approx(100 / 120)
    )
    # the paper's ViViT-B on Kinetics
    k = tr.read_points(str(_rec(tmp_path / "kinetics", "keep_049", 1.79, 78.0, videos=19000)))[0]
    assert k.panel == ("recognition", "Kinetics-400", "ViViT-B") and k.table == "kinetics"


def test_demo_results_file_stands_for_its_folder(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo_results.json").write_text(json.dumps(DEMO))
    _det(
        tmp_path / "demo" / "detection", "rgtp_keep64", 0.3235, 78.8
    )  # the same run: not counted twice
    files = tr.find_results([str(tmp_path)])
    assert [Path(f).name for f in files] == ["demo_results.json"]


def test_y_axis_is_honest():
    assert tr._ylimits([97.5, 99.2], False)[1] == 100  # never above 100
    lo, hi = tr._ylimits([78.8, 80.0], False)
    assert hi - lo >= 10 and lo > 0
    assert tr._ylimits([78.8, 80.0], True) == (0.0, 100.0)
    assert tr._ylimits([3.0, 9.0], False)[0] == 0  # close to zero: from zero, no break


def test_paper_points_with_executed_flops():
    paper = {(p.table, p.label): p.flops for p in tr.paper_points("paper")}
    executed = {(p.table, p.label): p.flops for p in tr.paper_points("executed")}
    assert paper[("vitdet672", "keep512")] == pytest.approx(72.6)
    assert executed[("vitdet672", "keep512")] < paper[("vitdet672", "keep512")]
    assert paper[("kinetics", "keep_049")] == pytest.approx(1790.0)  # GFLOPs per video


def test_tool_reference_never_and_errors(tmp_path):
    root = tmp_path / "demo"
    root.mkdir()
    (root / "demo_results.json").write_text(json.dumps(DEMO))
    out = tmp_path / "plot.png"
    tool = [sys.executable, str(REPO / "tools" / "plot_tradeoff.py")]
    proc = subprocess.run([*tool, str(root), "--output", str(out), "--reference", "never"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists() and out.with_suffix(".svg").exists()
    assert "ImageNet" not in proc.stdout and "demo VID" in proc.stdout
    proc = subprocess.run(
        [*tool, str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_tool_writes_png_and_svg_with_the_reference(tmp_path):
    """(Moved from tests/test_visualize.py.) Real-looking results of two data sets, each beside its own paper table."""
    _det(tmp_path / "vid", "keep512", 72.5, 81.0)
    _det(tmp_path / "vid", "base", 174.4, 82.0)
    rec = _rec(tmp_path / "kinetics", "keep_049", 1.79, 77.0)
    out = tmp_path / "plots" / "tradeoff.png"
    tool = [sys.executable, str(REPO / "tools" / "plot_tradeoff.py")]
    proc = subprocess.run([*tool, str(tmp_path / "vid"), str(rec), "--output", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    png, svg = out, out.with_suffix(".svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = svg.read_text()
    assert "<svg" in text and "keep512" in text and "paper (published)" in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["tradeoff.png", "tradeoff.svg"]
    assert "ImageNet VID" in proc.stdout and "Kinetics-400" in proc.stdout
    bad = tmp_path / "results_bad.json"
    bad.write_text("{not json")
    proc = subprocess.run([*tool, str(bad), "--output", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "results_bad.json" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_read_point_executed_and_the_papers_points(tmp_path):
    det = _det(tmp_path / "output" / "vid", "res1024_keep400", 119.1, 82.0)
    p = tr.read_point(str(det), "executed")
    assert (p.label, p.table, p.panel) == (
        "res1024_keep400", "vitdet1024", ("detection", "ImageNet VID", "ViTDet-B, 1024")
    )  # fmt: skip
    assert p.flops == pytest.approx(0.95 * 119.1)
    ref = tr.paper_points()
    assert len(ref) == 23 and {r.table for r in ref} == {
        "vitdet672",
        "vitdet1024",
        "kinetics",
        "epic",
    }
    keep512 = next(r for r in ref if r.table == "vitdet672" and r.label == "keep512")
    assert (keep512.flops, keep512.accuracy) == (72.6, 82.39)
