"""The video renderer (rgtp_apps.render, tools/demo_video.py) end to end on generated odd-size, odd-length clips
with tiny random-weight models, and the streaming rgtp_vitdet.predictor.VideoPredictor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from rgtp_apps import render

REPO = Path(__file__).resolve().parents[1]

W, H, N = 200, 136, 7  # neither side a multiple of 16, an odd number of frames

# A tiny ViTDet (as tests/vitdet): 128x128 canvas (8x8 tokens), 4 blocks, width 64; frames resized to <= 128.
TINY_DET = [
    "MODEL.VIT.IMG_SIZE", "128", "MODEL.VIT.INPUT_SIZE", "128", "MODEL.VIT.EMBED_DIM", "64",
    "MODEL.VIT.DEPTH", "4", "MODEL.VIT.NUM_HEADS", "4", "MODEL.VIT.WINDOW_SIZE", "4",
    "MODEL.VIT.WINDOW_BLOCK_INDEXES", "[0,2]", "MODEL.VIT.PRETRAIN_IMG_SIZE", "64",
    "MODEL.VIT.PYRAMID_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.02",
    "INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "128", "INPUT.MIN_SIZE_TRAIN", "(80,)",
    "INPUT.MAX_SIZE_TRAIN", "128", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.RGTP.RESET_PERIOD", "4",
]  # fmt: skip
# A tiny ViViT (as tests/vivit): 64-d, 2 spatial blocks, 4x4 tokens, clips of 4 frames (2 tubelets).
TINY_REC = [
    "VIVIT.EMBED_DIM", "64", "VIVIT.NUM_HEADS", "4", "VIVIT.SPATIAL_DEPTH", "2", "VIVIT.TEMPORAL_DEPTH", "1",
    "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "1", "DATA.TEST_CROP_SIZE", "64", "DATA.TEST_SHORT_SIDE", "64",
    "RGTP.RESET_PERIOD", "2", "TEST.CHECKPOINT_FILE_PATH", "", "MODEL.NUM_CLASSES", "7", "NUM_GPUS", "0",
]  # fmt: skip


def _scene(t: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(t)
    img = rng.integers(30, 90, size=(h, w, 3), dtype=np.uint8)
    img[30:90, 20 + 9 * t : 90 + 9 * t] = (220, 60, 60)
    return img


def write_clip(path: Path, n: int = N, w: int = W, h: int = H) -> Path:
    """An MPEG-4 clip of a moving block, written with PyAV."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(n):
            frame = av.VideoFrame.from_ndarray(_scene(t, h, w), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def read_back(path: Path):
    """(frame count, width, height) of a video decoded with PyAV."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), frames[0].shape[1], frames[0].shape[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "odd_size.mp4")


def test_input_clip_has_odd_size_and_length(clip):
    n, w, h = read_back(clip)
    assert (n, w, h) == (N, W, H) and w % 16 and h % 16 and n % 2


def test_detection_demo_mp4_keeps_frame_count(clip, tmp_path, capsys):
    torch.manual_seed(0)
    out = tmp_path / "det.mp4"
    args = ["--config-file", "configs/vid/keep512.yaml", "--input", str(clip), "--output", str(out)]
    png = tmp_path / "frame2.png"
    args += ["--confidence-threshold", "0.03", "--save-frame", "2", str(png)]
    assert render.main([*args, "--opts", *TINY_DET]) == 0
    n, w, h = read_back(out)
    assert n == N and w >= 2 * W and h > H and w % 2 == 0 and h % 2 == 0
    assert Image.open(png).size == (w, h)
    assert sorted(os.listdir(tmp_path)) == ["det.mp4", "frame2.png"]  # temporary files renamed
    assert f"wrote {N} frames" in capsys.readouterr().out


def test_recognition_demo_gif_from_frame_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(N):  # 168x120 PNG frames: 7 frames = one clip of 4 + a short clip of 3
        Image.fromarray(_scene(t, 120, 168)).save(folder / f"{t:05d}.png")
    out = tmp_path / "rec.gif"
    args = [
        "--task",
        "recognition",
        "--config-file",
        "configs/kinetics/keep_049.yaml",
        "--input",
        str(folder),
    ]
    assert render.main([*args, "--output", str(out), "--opts", *TINY_REC]) == 0
    n, w, h = read_back(out)
    assert n == N and w >= 2 * 168 and h > 120


def test_rendered_frame_dims_pruned_cells_but_not_kept_cells(clip):
    """In a rendered pruned frame, the left panel equals the input on kept token cells and is dimmed on pruned
    ones; the heatmap panel differs from the input."""
    from rgtp_vitdet.predictor import VideoPredictor

    torch.manual_seed(0)
    cfg = render.setup_detection_cfg(str(REPO / "configs/vid/keep512.yaml"), TINY_DET)
    predictor = VideoPredictor(cfg, input_format="RGB")
    frames = [_scene(t) for t in range(3)]
    outs = [predictor(f) for f in frames]
    assert [o["frame_type"] for o in outs] == ["first", "pruned", "pruned"]
    assert outs[0]["kept"] is None and outs[1]["kept"].numel() == round(0.29 * 64)
    assert outs[1]["heatmap"].shape == (64,) and outs[1]["gflops"] < outs[0]["gflops"]
    out, frame = outs[2], frames[2]
    img = render.render_detection(frame, out, ["x"] * 30, 2.0, 2, 3)  # threshold 2: no boxes drawn
    left, right = img[:H, :W].astype(float), img[:H, W + 4 : 2 * W + 4].astype(float)
    ch, cw = out["cell"]
    gh, gw = out["grid"]
    kept = set(out["kept"].tolist())
    ratios = {True: [], False: []}
    for r in range(gh):
        for c in range(gw):
            y0, y1 = int(np.ceil(r * ch)) + 2, int((r + 1) * ch) - 2  # cell interior (no outline)
            x0, x1 = int(np.ceil(c * cw)) + 2, int((c + 1) * cw) - 2
            if y1 > H or x1 > W or y1 <= y0:
                continue  # padding of the canvas, outside the frame
            ratio = left[y0:y1, x0:x1].mean() / frame[y0:y1, x0:x1].astype(float).mean()
            ratios[r * gw + c in kept].append(ratio)
    assert ratios[True] and ratios[False], "need visible kept and pruned cells"
    assert all(abs(x - 1) < 0.01 for x in ratios[True])
    assert all(abs(x - 0.3) < 0.02 for x in ratios[False])
    assert np.abs(right - frame).mean() > 10  # the heatmap overlay changes the frame


def test_predictor_reset_starts_a_new_video():
    from rgtp_vitdet.predictor import VideoPredictor

    cfg = render.setup_detection_cfg(str(REPO / "configs/vid/keep512.yaml"), TINY_DET)
    predictor = VideoPredictor(cfg, input_format="BGR")
    types = [predictor(_scene(t)[:, :, ::-1].copy())["frame_type"] for t in range(5)]
    assert types == ["first", "pruned", "pruned", "pruned", "reset"]
    predictor.reset()
    assert predictor(_scene(0))["frame_type"] == "first" and predictor.frame_index == 1
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((10, 10, 3), dtype=np.float32))


def test_corrupt_video_gives_clear_error_and_no_output(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    out = tmp_path / "out" / "demo.mp4"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo_video.py"), "--config-file", "configs/vid/keep512.yaml",
         "--input", str(bad), "--output", str(out), "--opts", *TINY_DET],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot read video" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_corrupt_frame_midway_leaves_no_partial_file(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        Image.fromarray(_scene(t)).save(folder / f"{t:05d}.jpg")
    (folder / "00003.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    outdir = tmp_path / "out"
    outdir.mkdir()
    args = ["--config-file", "configs/vid/keep512.yaml", "--input", str(folder)]
    assert render.main([*args, "--output", str(outdir / "demo.mp4"), "--opts", *TINY_DET]) == 2
    err = capsys.readouterr().err
    assert "frame 3" in err and "00003.jpg" in err
    assert os.listdir(outdir) == []  # neither the output nor its temporary file


def test_bad_output_extension_is_refused(clip, tmp_path, capsys):
    args = ["--config-file", "configs/vid/keep512.yaml", "--input", str(clip)]
    assert render.main([*args, "--output", str(tmp_path / "x.avi"), "--opts", *TINY_DET]) == 2
    assert ".mp4" in capsys.readouterr().err and os.listdir(tmp_path) == []


def test_max_size_and_max_frames(clip, tmp_path, capsys):
    """--max-size bounds the panels (the model still sees the whole frame), --max-frames renders the start."""
    out = tmp_path / "small.gif"
    args = ["--config-file", "configs/vid/keep512.yaml", "--input", str(clip), "--output", str(out)]
    args += ["--max-size", "200", "--max-frames", "3"]
    assert render.main([*args, "--opts", *TINY_DET]) == 0
    with Image.open(out) as im:
        assert im.n_frames == 3 and im.width <= 200 + 1
    assert "wrote 3 frames" in capsys.readouterr().out
