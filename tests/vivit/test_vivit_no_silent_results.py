"""Issue 13, recognition: an evaluation either measures what was asked for or says clearly why not (cases 1-4, 6
and 8 of the issue, on data written here)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from vivit_helpers import REPO, TINY_KINETICS, cfg_from, make_kinetics, write_video

DEMO_CLASSES = sorted(
    ["moving left", "moving right", "approaching", "receding", "moving up", "moving down"]
)


def _kinetics_csv(data: Path, rows) -> None:
    (data / "annotations").mkdir(parents=True, exist_ok=True)
    with open(data / "annotations" / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows(rows)


def _demo_layout(root: Path, labels, video_dir: str = "val") -> Path:
    """A Kinetics layout as docs/recognition.md describes it (videos in ``val/``), with demo class names."""
    data = root / "kin"
    rows = []
    for i, label in enumerate(labels):
        ytid = f"clip{i:02d}"
        rows.append([label, ytid, 0, 2, "val"])
        write_video(data / video_dir / f"{ytid}_000000_000002.mp4", 20, size=(112, 112), seed=i)
    _kinetics_csv(data, rows)
    return data


def _run(args, cwd=REPO, env=None):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})),
    )


# ------------------------------------------------------------------------------------------------ case 1
def test_case1_nothing_measured_is_an_error_naming_where_it_looked(tmp_path):
    data = _demo_layout(tmp_path, DEMO_CLASSES[:3])
    proc = _run(
        ["tools/vivit_net.py", "--cfg", "configs/demo/kin_keep14.yaml"]
        + ["DATA.PATH_TO_DATA_DIR", str(data), "OUTPUT_DIR", str(tmp_path / "out")]
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert "error:" in err and "DATA.VIDEO_DIR" in err and str(data / "videos" / "val") in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_case1_video_dir_is_documented():
    text = (REPO / "docs" / "recognition.md").read_text()
    assert "DATA.VIDEO_DIR" in text and "videos/{split}" in text


# ------------------------------------------------------------------------------------------------ case 2
def test_case2_labels_follow_the_model_class_list_not_the_csv(tmp_path):
    from rgtp_vivit.build import build_dataset

    data = _demo_layout(tmp_path, ["moving left", "receding"])
    cfg = cfg_from(["configs/demo/kin_base.yaml"], ["DATA.PATH_TO_DATA_DIR", str(data)])
    ds = build_dataset("Kinetics", cfg, "val")
    assert ds.classes == DEMO_CLASSES
    assert [r.label for r in ds.records] == [
        DEMO_CLASSES.index("moving left"),
        DEMO_CLASSES.index("receding"),
    ]


def test_case2_csv_class_count_differing_from_the_model_is_an_error(kinetics_root, tmp_path):
    from rgtp_vivit.build import build_dataset

    from rgtp.config import ConfigError

    # no class list anywhere: the CSV's 3 classes against a 5-class model
    cfg = cfg_from(
        ["configs/kinetics/base.yaml"],
        TINY_KINETICS + ["MODEL.NUM_CLASSES", "5", "DATA.PATH_TO_DATA_DIR", str(kinetics_root)],
    )
    with pytest.raises(ConfigError, match=r"3 .*5|5 .*3"):
        build_dataset("Kinetics", cfg, "val")
    # a class-names file of 4 names against a 3-class model
    names = tmp_path / "names.txt"
    names.write_text("abseiling\nbowling\ncooking egg\ndancing\n")
    cfg = cfg_from(
        ["configs/kinetics/base.yaml"],
        TINY_KINETICS
        + ["DATA.PATH_TO_DATA_DIR", str(kinetics_root), "DATA.CLASS_NAMES_FILE", str(names)],
    )
    with pytest.raises(ConfigError, match=r"4 .*3|3 .*4"):
        build_dataset("Kinetics", cfg, "val")


# ------------------------------------------------------------------------------------------------ case 3
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _avi(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 96, 72, "yuv420p"
        for t in range(n):
            img = np.random.default_rng(t).integers(0, 255, (72, 96, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_case3_truncated_video_is_decoded_and_reported(tmp_path):
    from rgtp_vivit.video import VideoError, decode_video

    clip = tmp_path / "cut.avi"
    _avi(clip, 40)
    _truncate(clip)
    report: list = []
    video, _ = decode_video(str(clip), report=report)
    assert 0 < len(video) < 40
    assert report and "40" in report[0] and str(len(video)) in report[0]
    with pytest.raises(VideoError, match="truncated|partly"):
        decode_video(str(clip), strict=True)


def test_case3_partly_decoded_videos_are_listed_and_strict_makes_them_errors(tmp_path, caplog):
    from rgtp_vivit.test_net import test
    from rgtp_vivit.video import VideoError

    root = make_kinetics(tmp_path, num_videos=3, short_index=None)
    cut = sorted((root / "val").glob("*.mp4"))[1]
    _avi(cut, 60)  # an avi under the .mp4 name: the header says 60 frames
    _truncate(cut)
    opts = TINY_KINETICS + ["DATA.PATH_TO_DATA_DIR", str(root), "OUTPUT_DIR", str(tmp_path / "o")]
    cfg = cfg_from(["configs/kinetics/base.yaml"], opts + ["TEST.NUM_ENSEMBLE_VIEWS", "1"])
    with caplog.at_level("WARNING"):
        res = test(cfg)
    assert res["num_videos"] == 3 and len(res["partial"]) == 1
    assert res["partial"][0]["key"] == cut.stem
    assert "partly decoded" in caplog.text and cut.stem in caplog.text
    written = json.loads((tmp_path / "o" / "results.json").read_text())
    assert written["partial"][0]["key"] == cut.stem
    cfg = cfg_from(
        ["configs/kinetics/base.yaml"],
        opts + ["TEST.NUM_ENSEMBLE_VIEWS", "1", "DATA.STRICT", "True"],
    )
    with pytest.raises(VideoError, match=cut.stem):
        test(cfg)


# ------------------------------------------------------------------------------------------------ case 4
def write_rotated(path: Path, degrees: int = 90) -> np.ndarray:
    """A 96x48 mp4 with a display matrix rotating it by ``degrees`` (counter-clockwise); returns the stored frame."""
    img = np.zeros((48, 96, 3), np.uint8)
    img[:, :24] = 255  # a white band on the left of the stored picture
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 96, 48, "yuv420p"
        s.set_display_rotation(degrees)
        for _ in range(6):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return img


def test_case4_rotation_metadata_is_honoured(tmp_path):
    from rgtp_vivit.video import decode_video

    stored = write_rotated(tmp_path / "rot.mp4")
    video, _ = decode_video(str(tmp_path / "rot.mp4"))
    expected = np.rot90(stored, 1)  # what a player shows: the band at the bottom
    assert video.shape[1:] == expected.shape == (96, 48, 3)
    assert np.abs(video[0].astype(int) - expected).mean() < 10


# ------------------------------------------------------------------------------------------------ case 6
def test_case6_results_json_has_no_nan(tmp_path):
    from rgtp_vivit.fileio import atomic_write_json, json_safe

    out = json_safe({"top1": float("nan"), "x": [1.0, float("inf")]}, reasons={"top1": "no videos"})
    assert out["top1"] is None and out["top1_reason"] == "no videos" and out["x"][1] is None
    with pytest.raises(ValueError):
        atomic_write_json({"a": float("nan")}, str(tmp_path / "x.json"))


# ------------------------------------------------------------------------------------------------ case 8
def test_case8_missing_csv_column_is_one_line_error(tmp_path):
    data = tmp_path / "kin"
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "val.csv").write_text("label,youtube_id,time_start\nabseiling,a,0\n")
    proc = _run(
        ["tools/vivit_net.py", "--cfg", "configs/kinetics/base.yaml", *TINY_KINETICS]
        + ["DATA.PATH_TO_DATA_DIR", str(data), "OUTPUT_DIR", str(tmp_path / "o")]
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error:" in proc.stderr and "time_end" in proc.stderr and "val.csv" in proc.stderr


def test_case8_strict_failure_is_one_line_error(tmp_path):
    root = make_kinetics(tmp_path, num_videos=3, short_index=None)
    missing = sorted((root / "val").glob("*.mp4"))[0]
    missing.unlink()
    proc = _run(
        ["tools/vivit_net.py", "--cfg", "configs/kinetics/base.yaml", *TINY_KINETICS]
        + ["DATA.PATH_TO_DATA_DIR", str(root), "DATA.STRICT", "True", "OUTPUT_DIR", str(tmp_path)]
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error:" in proc.stderr and missing.name in proc.stderr


def test_case8_detector_checkpoint_given_to_the_recogniser_says_so(tmp_path):
    from rgtp_vivit.checkpoint import CheckpointError, load_model_state
    from rgtp_vivit.test_net import build_test_model

    det = tmp_path / "det.pth"
    torch.save({"model": {"backbone.net.patch_embed.proj.weight": torch.zeros(1)}}, det)
    cfg = cfg_from(["configs/kinetics/base.yaml"], TINY_KINETICS)
    model = build_test_model(cfg, "", torch.device("cpu"))
    with pytest.raises(CheckpointError, match="detector") as e:
        load_model_state(model, str(det))
    assert len(str(e.value)) < 600


def test_case8_relative_checkpoint_resolves_against_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_from(["configs/demo/kin_keep14.yaml"], [])
    assert os.path.isfile(cfg.TEST.CHECKPOINT_FILE_PATH)
    assert Path(cfg.TEST.CHECKPOINT_FILE_PATH) == REPO / "models/demo/vivit_demo_keep14.pyth"
