"""tools/agreement.py and rgtp_apps.agreement: dense vs pruned agreement on generated clips, with the demo models.

The clips are written here with PyAV (moving coloured shapes over a panning background); the detection run also
reads a folder of frames. Checks the JSON fields (names, types, ranges, ``null`` only with a reason), the Markdown
table and the plots, the dense-vs-dense sanity check (AP50 = 1, top-1 agreement = 1), pycocotools' AP50 against
the project's own implementation, and the command line (one run, and its errors).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image
from rgtp_apps.agreement import FRAME_LABELS, AgreementError, frame_label, run_agreement
from rgtp_apps.agreement_detection import coco_ap50_pycocotools, match_boxes
from rgtp_apps.agreement_recognition import compare_distributions, log_probs

from rgtp.cli import repo_root

REPO = repo_root()
CLASSES = ["approaching", "moving down", "moving left", "moving right", "moving up", "receding"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3)`` uint8: discs and rectangles of random colours moving over a panning background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = np.stack(
        [96 + 40 * np.sin(xx / 17), 110 + 30 * np.cos(yy / 23), 80 + 20 * np.sin((xx + yy) / 31)],
        -1,
    )
    shapes = [
        (rng.integers(40, 256, 3), size * rng.uniform(0.1, 0.18), rng.uniform(0.2, 0.8, 2) * size,
         rng.uniform(-3, 3, 2), i % 2)
        for i in range(3)
    ]  # fmt: skip
    out = []
    for t in range(n):
        img = np.roll(bg, 2 * t, axis=1).copy()
        for color, r, (x, y), (vx, vy), square in shapes:
            cx, cy = x + vx * t, y + vy * t
            if square:
                mask = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= 0.7 * r)
            else:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            img[mask] = color
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_mp4(path: str, frames: np.ndarray, fps: int = 25) -> str:
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("agreement_clips")
    det = write_mp4(str(root / "shapes_det.mp4"), synthetic_frames(24, 192, seed=0))
    folder = root / "frames"
    folder.mkdir()
    for i, f in enumerate(synthetic_frames(4, 160, seed=1)):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    rec = write_mp4(str(root / "shapes_rec.mp4"), synthetic_frames(56, 128, seed=2))
    return {"root": root, "det": det, "folder": str(folder), "rec": rec}


def _strict_json(path: str) -> dict:
    def no_constant(name: str) -> None:
        raise ValueError(f"{path}: invalid JSON constant {name}")

    with open(path) as f:
        return json.load(f, parse_constant=no_constant)


def _check_value(d: dict, key: str, lo: float = 0.0, hi: float = 1.0) -> None:
    v = d[key]
    if v is None:
        assert isinstance(d[f"{key}_reason"], str) and d[f"{key}_reason"], key
    else:
        assert isinstance(v, float) and lo <= v <= hi + 1e-9, (key, v)


def _check_types(ft: dict, n: int) -> None:
    assert set(ft) == set(FRAME_LABELS) and sum(ft.values()) == n


@pytest.fixture(scope="module")
def det_report(clips):
    torch.set_num_threads(1)
    out = str(clips["root"] / "out_det")
    videos = [clips["det"], clips["folder"]]
    report = run_agreement("detection", videos, out, baselines=["random", "change"], progress=False)
    return report, out


def test_detection_report(det_report, clips):
    report, out = det_report
    data = _strict_json(os.path.join(out, "agreement.json"))
    assert data["task"] == "detection" and data["reference"] == "dense"
    assert data["score_thresh"] == 0.5 and data["skipped_videos"] == []
    ran = [m for m in ("pruned", "random", "change") if m in data["methods"]]
    assert ran[:2] == ["pruned", "random"]
    if "change" not in ran:  # the project's config validation still rejects it
        assert "MODEL.RGTP.SELECTION" in data["skipped_methods"]["change"]
    assert data["methods"]["dense"]["selection"] == "dense"
    assert data["methods"]["pruned"]["selection"] == "rollout"
    assert data["methods"]["pruned"]["kept_tokens"] == 64
    assert data["methods"]["pruned"]["tokens"] == 256
    assert [v["frames"] for v in data["videos"]] == [24, 4]
    assert data["overall"]["frames"] == 28 and data["overall"]["videos"] == 2
    for block in [data["overall"]] + data["videos"]:
        dense = block["methods"]["dense"]
        n = block["frames"]
        _check_types(dense["frame_types"], n)
        assert dense["frame_types"]["dense"] == n
        for name in ran:
            r = block["methods"][name]
            for key in ("ap50", "recovered", "precision", "mean_iou"):
                _check_value(r, key)
            if r["mean_iou"] is not None:
                assert r["mean_iou"] >= 0.5  # matches need IoU >= 0.5
            assert 0 < r["gflops_executed"] <= r["gflops_paper"] < dense["gflops_paper"]
            assert r["speedup"] is not None and r["speedup"] > 0 and r["ms_per_frame"] > 0
            assert r["dense_detections"] == dense["detections"] and r["matched"] <= r["detections"]
            ft = r["frame_types"]
            _check_types(ft, n)
            assert ft["full"] == block.get("videos", 1) and ft["pruned"] > 0
    video = data["videos"][0]
    t = video["timeline"]
    assert t["frame_type"]["pruned"][0] == "full" and t["frame_type"]["pruned"][8] == "reset_period"
    assert t["frame_type"]["dense"] == ["dense"] * 24
    assert len(t["dense_detections"]) == 24
    for name in ran:
        assert len(t["recovered"][name]) == len(t["mean_iou"][name]) == 24
        for n_dense, rec in zip(t["dense_detections"], t["recovered"][name]):
            assert (rec is None) == (n_dense == 0) and (rec is None or 0 <= rec <= 1)
    assert (
        data["overall"]["methods"]["dense"]["detections"] > 0
    )  # the shapes give the model something
    md = open(os.path.join(out, "agreement.md")).read()
    assert (
        "| method | selection | kept/N | AP50 vs dense |" in md
        and "| pruned | rollout | 64/256 |" in md
    )
    assert len(data["outputs"]["plots"]) == 2
    for p in data["outputs"]["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(p) > 10_000
    assert report["overall"]["frames"] == 28


def test_detection_dense_against_itself(clips, tmp_path):
    report = run_agreement(
        "detection",
        [clips["det"]],
        str(tmp_path),
        max_frames=6,
        pruned_opts=["MODEL.RGTP.ENABLED", "False"],
        progress=False,
        plots=False,
    )
    r = report["overall"]["methods"]["pruned"]
    assert report["methods"]["pruned"]["selection"] == "dense" and report["overall"]["frames"] == 6
    assert r["dense_detections"] > 0
    assert r["ap50"] == pytest.approx(1.0, abs=1e-12)
    assert r["recovered"] == r["precision"] == 1.0
    assert r["mean_iou"] == pytest.approx(1.0, abs=1e-6)


def test_ap50_pycocotools_matches_project_metric():
    from rgtp_vitdet.metrics import coco_ap50

    rng = np.random.default_rng(3)
    gts, dets = [], []
    for _ in range(12):
        g = rng.uniform(0, 150, (rng.integers(0, 5), 2))
        gb = np.concatenate([g, g + rng.uniform(10, 60, g.shape)], 1)
        gl = rng.integers(0, 3, len(gb))
        jitter = rng.normal(0, 3, gb.shape)
        extra = rng.uniform(0, 150, (rng.integers(0, 4), 2))
        db = np.concatenate([gb + jitter, np.concatenate([extra, extra + 30], 1)])
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)  # valid boxes, as a detector returns
        dl = np.concatenate([gl, rng.integers(0, 3, len(extra))])
        gts.append((gb, gl))
        dets.append((db, rng.uniform(0.05, 1, len(db)), dl))
    ours, reason = coco_ap50_pycocotools(gts, dets)
    ref, _ = coco_ap50(dict(enumerate(gts)), dict(enumerate(dets)), num_classes=3)
    assert reason is None and 0 < ours < 1 and ours == pytest.approx(ref, abs=1e-9)
    assert coco_ap50_pycocotools([(np.zeros((0, 4)), np.zeros(0, int))], dets[:1])[0] is None
    assert coco_ap50_pycocotools(gts, [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * 12) == (
        0.0,
        None,
    )
    box = np.array([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    assert match_boxes(box, np.array([0, 1]), box[::-1], np.array([1, 0])) == [1.0, 1.0]
    assert match_boxes(box, np.array([0, 1]), box, np.array([1, 0])) == []  # class must agree


def test_compare_distributions_and_labels():
    a = log_probs(torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -2.0]), "mean_logits")
    same = compare_distributions(a, a)
    assert same == {"top1_agreement": 1.0, "top5_overlap": 1.0, "kl_divergence": 0.0}
    b = log_probs(torch.tensor([0.0, 3.0, 0.5, 0.0, -1.0, 2.0]), "mean_logits")
    diff = compare_distributions(a, b)
    p, q = a.exp(), b.exp()
    assert diff["top1_agreement"] == 0.0 and diff["top5_overlap"] == 0.8
    assert diff["kl_divergence"] == pytest.approx(float((p * (p / q).log()).sum()))
    s = log_probs(torch.tensor([1.0, 0.5, 0.5]), "sum_softmax")
    assert s.exp().sum().item() == pytest.approx(1.0)
    assert frame_label("first", None) == "full" and frame_label("pruned", None) == "pruned"
    assert (
        frame_label("reset", "period") == "reset_period"
        and frame_label("reset", "cut") == "reset_cut"
    )
    assert frame_label("dense", None) == "dense"


def test_recognition_report_and_dense_against_itself(clips, tmp_path):
    out = str(tmp_path / "rec")
    report = run_agreement(
        "recognition", [clips["rec"]], out, baselines=["random", "change"], progress=False
    )
    data = _strict_json(os.path.join(out, "agreement.json"))
    assert data["task"] == "recognition" and data["overall"]["videos"] == 1
    assert (
        data["methods"]["pruned"]["kept_tokens"] == 14 and data["methods"]["pruned"]["tokens"] == 49
    )
    ran = [m for m in ("pruned", "random", "change") if m in data["methods"]]
    if "change" not in ran:
        assert "RGTP.SELECTION" in data["skipped_methods"]["change"]
    dense = data["overall"]["methods"]["dense"]
    video = data["videos"][0]
    clips_ = video["timeline"]["clips"]
    assert video["frames"] == 56 and clips_[0] == [0, 48] and clips_[-1][1] == 56
    for name in ran:
        for block in (data["overall"]["methods"][name], video["methods"][name]):
            assert block["top1_agreement"] in (0.0, 1.0)
            _check_value(block, "top5_overlap")
            _check_value(block, "kl_divergence", hi=math.inf)
            _check_value(block, "clip_top1_agreement")
            assert block["clips"] == len(clips_)
            assert 0 < block["gflops_executed"] <= block["gflops_paper"] < dense["gflops_paper"]
            assert block["speedup"] > 0
            assert block["frame_types"]["full"] == 1 and block["frame_types"]["pruned"] == 3
        assert len(video["timeline"]["top5_overlap"][name]) == len(clips_)
        assert len(video["timeline"]["frame_type"][name]) == 56
        assert isinstance(video["methods"][name]["top1"], str)
    assert dense["frame_types"]["dense"] == 4
    assert report["videos"][0]["methods"]["dense"]["top1"] in CLASSES
    assert os.path.getsize(data["outputs"]["plots"][0]) > 10_000
    assert (
        "| method | selection | kept/N | top-1 agreement |"
        in open(data["outputs"]["markdown"]).read()
    )

    same = run_agreement(
        "recognition",
        [clips["rec"]],
        str(tmp_path / "same"),
        pruned_opts=["RGTP.ENABLE", "False"],
        progress=False,
        plots=False,
    )["overall"]["methods"]["pruned"]
    assert same["top1_agreement"] == same["clip_top1_agreement"] == 1.0
    assert same["top5_overlap"] == same["clip_top5_overlap"] == 1.0
    assert same["kl_divergence"] == pytest.approx(0.0, abs=1e-9)


def test_error_exit(tmp_path, capsys):
    """A user error of the tool is one line ``error: ...`` and exit status 2, without a traceback."""
    from rgtp.cli import run_main

    def main(argv):
        run_agreement("detection", argv, str(tmp_path / "o"))

    assert run_main(main, [str(tmp_path / "nope.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.mp4" in err and "Traceback" not in err


def test_nothing_measured_and_bad_inputs(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(AgreementError, match="nothing measured"):
        run_agreement("detection", [str(junk)], str(tmp_path / "o"), progress=False)
    with pytest.raises(AgreementError, match="do not exist"):
        run_agreement("detection", [str(tmp_path / "missing.mp4")], str(tmp_path / "o"))
    with pytest.raises(AgreementError, match="unknown baseline"):
        run_agreement("detection", [str(junk)], str(tmp_path / "o"), baselines=["eventful"])
    with pytest.raises(AgreementError, match="MODEL.RGTP.ENABLED False"):
        run_agreement(
            "detection", [str(junk)], str(tmp_path / "o"), config_file="configs/demo/vid_base.yaml"
        )
    assert not os.path.exists(tmp_path / "o" / "agreement.json")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO, "tools", "agreement.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_cli(clips, tmp_path):
    out = str(tmp_path / "cli")
    res = _cli("--task", "recognition", clips["rec"], "--output", out, "--max-frames", "16")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| pruned | rollout | 14/49 |" in res.stdout and "wrote " in res.stdout
    data = _strict_json(os.path.join(out, "agreement.json"))
    assert data["overall"]["frames"] == 16 and data["max_frames"] == 16
    assert data["task"] == "recognition" and data["outputs"]["plots"]
