"""Issue 13, tools/demo_video.py: truncated and rotated inputs, task detection, relative weights and argument
errors (cases 3, 4 and 8), run as the user runs it (a subprocess) on clips written here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from rgtp_apps.render.layout import GAP, display_scale

REPO = Path(__file__).resolve().parents[1]

TINY_DET = [
    "MODEL.VIT.IMG_SIZE", "128", "MODEL.VIT.INPUT_SIZE", "128", "MODEL.VIT.EMBED_DIM", "64",
    "MODEL.VIT.DEPTH", "4", "MODEL.VIT.NUM_HEADS", "4", "MODEL.VIT.WINDOW_SIZE", "4",
    "MODEL.VIT.WINDOW_BLOCK_INDEXES", "[0,2]", "MODEL.VIT.PRETRAIN_IMG_SIZE", "64",
    "MODEL.VIT.PYRAMID_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "128",
    "INPUT.MIN_SIZE_TRAIN", "(80,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
]  # fmt: skip
TINY_REC = [
    "VIVIT.EMBED_DIM", "64", "VIVIT.NUM_HEADS", "4", "VIVIT.SPATIAL_DEPTH", "2", "VIVIT.TEMPORAL_DEPTH", "1",
    "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "1", "DATA.TEST_CROP_SIZE", "64", "DATA.TEST_SHORT_SIDE", "64",
    "RGTP.RESET_PERIOD", "2", "TEST.CHECKPOINT_FILE_PATH", "", "MODEL.NUM_CLASSES", "7", "NUM_GPUS", "0",
]  # fmt: skip


def write(path: Path, n: int, w: int = 96, h: int = 64, fmt=None, rotation: int = 0) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if rotation:
            s.set_display_rotation(rotation)
        for t in range(n):
            img = np.random.default_rng(t).integers(0, 255, (h, w, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def demo(args, cwd=REPO):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo_video.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def det(inp: Path, out: Path, *extra, opts=TINY_DET):
    return ["--config-file", "configs/vid/keep512.yaml", "--input", str(inp), "--output", str(out),
            *extra, "--opts", *opts]  # fmt: skip


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> Path:
    clip = write(tmp_path_factory.mktemp("cut") / "cut.avi", 40, fmt="avi")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    return clip


def test_case3_truncated_video_keeps_what_decodes_and_says_so(truncated, tmp_path):
    out = tmp_path / "o.mp4"
    proc = demo(det(truncated, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with av.open(str(out)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert 0 < n < 40
    assert "warning:" in proc.stderr and f"{n} of the 40 frames" in proc.stderr


def test_case3_strict_fails_before_any_output(truncated, tmp_path):
    out = tmp_path / "o" / "o.mp4"
    proc = demo(det(truncated, out, "--strict"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error:" in proc.stderr and "truncated" in proc.stderr and str(truncated) in proc.stderr
    assert "rendering" not in proc.stderr  # failed before the model ran
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_case4_rotated_video_is_rendered_upright(tmp_path):
    clip = write(tmp_path / "rot.mp4", 3, w=96, h=64, rotation=90)
    png = tmp_path / "f.png"
    proc = demo(det(clip, tmp_path / "o.mp4", "--save-frame", "0", str(png)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = display_scale(96, 64)  # small frames are enlarged for display by a whole factor (3 here)
    with Image.open(png) as im:  # two panels of the upright 64x96 frame, not of the 96x64 one
        assert abs(im.width - (2 * 64 * s + GAP)) <= 8, (im.size, s)


def test_case8_fps_must_be_positive(tmp_path):
    for bad in ("0", "-5"):
        proc = demo(det(tmp_path, tmp_path / "o.mp4", f"--fps={bad}"))
        assert proc.returncode == 2 and "--fps" in proc.stderr and "Traceback" not in proc.stderr


def test_case8_save_frame_past_the_end_is_an_error(tmp_path):
    clip = write(tmp_path / "c.mp4", 7)
    proc = demo(det(clip, tmp_path / "o.mp4", "--save-frame", "100", str(tmp_path / "f.png")))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "100" in proc.stderr and "7 frames" in proc.stderr and "--save-frame" in proc.stderr
    assert not (tmp_path / "f.png").exists()


def test_case8_task_of_the_config_is_detected(tmp_path):
    clip = write(tmp_path / "c.mp4", 4)
    out = tmp_path / "o.gif"
    args = [
        "--config-file",
        "configs/kinetics/base.yaml",
        "--input",
        str(clip),
        "--output",
        str(out),
    ]
    proc = demo([*args, "--opts", *TINY_REC])  # no --task: the recognition config says it
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists() and "recognition" in proc.stderr
    proc = demo([*args, "--task", "detection", "--opts", *TINY_REC])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "recognition" in proc.stderr and "--task" in proc.stderr


def test_case8_relative_weights_work_from_another_folder(tmp_path):
    clip = write(tmp_path / "c.mp4", 2, w=64, h=64)
    out = tmp_path / "o.mp4"
    cfg = str(REPO / "configs/demo/vid_keep64.yaml")
    proc = demo(["--config-file", cfg, "--input", str(clip), "--output", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists()
