"""The video renderer's layout (rgtp_apps.render, issue 16), without a model: display scale and --max-size, captions
that stay legible on small frames, kept counts over the image tokens (padding apart), anchors drawn apart from the
shown detections, one panel and no heatmap caption for dense configs, and the shared-palette GIF."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from rgtp_apps.render import AtomicVideoWriter, CaptionBar, detection_lines, render_detection
from rgtp_apps.render.layout import GAP, MIN_SIDE, Layout, display_scale, kept_caption, token_count

from rgtp import visualize as vis


def _canvas_geometry(h: int, w: int, canvas: int = 256, patch: int = 16):
    """The predictor's geometry: the frame resized to fit the square canvas, zero-padded bottom/right."""
    s = min(canvas / h, canvas / w)
    rh, rw = round(h * s), round(w * s)
    return (canvas // patch, canvas // patch), (patch * h / rh, patch * w / rw)


def _out(h, w, scores, boxes, kept=None, heatmap=True, frame_type="pruned"):
    grid, cell = _canvas_geometry(h, w)
    n = grid[0] * grid[1]
    inst = SimpleNamespace(
        scores=torch.tensor(scores, dtype=torch.float32),
        pred_boxes=SimpleNamespace(tensor=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        pred_classes=torch.zeros(len(scores), dtype=torch.long),
    )
    return {
        "instances": inst,
        "kept": None if kept is None else torch.tensor(kept),
        "heatmap": torch.linspace(0, 1, n) if heatmap else None,
        "frame_type": frame_type,
        "gflops": 0.2,
        "ms": 12.0,
        "grid": grid,
        "cell": cell,
    }


@pytest.mark.parametrize(
    "hw, max_size, expected",
    [
        ((16, 16), 0, 12.0),  # enlarged by a whole factor to MIN_SIDE
        ((144, 176), 0, 2.0),
        ((192, 192), 0, 1.0),
        ((720, 1280), 640, (640 - GAP) / 2560),  # two panels side by side fit 640
        ((16, 16), 100, 3.0),  # the enlargement that still fits --max-size
    ],
)
def test_display_scale(hw, max_size, expected):
    assert display_scale(*hw, panels=2, max_size=max_size) == pytest.approx(expected)
    s = display_scale(*hw, panels=2, max_size=max_size)
    if max_size:
        assert 2 * hw[1] * s + GAP <= max_size + 1e-6


@pytest.mark.parametrize("hw", [(16, 16), (144, 176), (272, 640), (720, 1280)])
def test_captions_are_legible_and_fit(hw):
    """The caption bar below the panels: at least 12-pixel text, every line within the width, one height."""
    s = display_scale(*hw, max_size=640 if hw[1] > 400 else 0)
    width = 2 * round(hw[1] * s) + GAP
    bar = CaptionBar(width)
    assert bar.size >= 12
    if s >= 1:  # small frames are enlarged: each panel at least MIN_SIDE on its short side
        assert min(hw) * s >= MIN_SIDE
    out = _out(hw[0], hw[1], [0.9, 0.3], [[1, 1, 5, 5], [2, 2, 9, 9]], kept=list(range(40)))
    lines = detection_lines(out, hw, 0.5, 9, 300)
    for text in bar.wrap(lines):
        assert bar._measure.textlength(text, font=bar.font) <= width - 2 * bar.margin
    first = bar.render(lines)
    later = bar.render(detection_lines(out, hw, 0.5, 299, 300))
    assert first.shape == later.shape and first.shape[1] == width


def test_kept_counts_are_over_image_tokens_with_padding_apart():
    """640x272 on the 256 canvas: 7 of 16 token rows lie on the image (112 of 256 tokens)."""
    grid, cell = _canvas_geometry(272, 640)
    geom = vis.TokenGeometry(grid, cell)
    full = token_count(None, geom, (272, 640))
    assert (full.image, full.padding) == (112, 144)
    kept = list(range(0, 112, 2)) + [200, 201, 255]  # 56 on the image, 3 in the padding
    c = token_count(kept, geom, (272, 640))
    assert (c.kept_image, c.kept_padding) == (56, 3)
    assert kept_caption(c, False) == "kept 56/112 image tokens (+ 3/144 padding)"
    assert kept_caption(full, True) == "all 112 image tokens (+ 144 padding)"
    square = token_count(
        list(range(64)), vis.TokenGeometry(*_canvas_geometry(192, 192)), (192, 192)
    )
    assert kept_caption(square, False) == "kept 64/256 tokens"


def test_anchors_are_drawn_apart_from_the_shown_detections():
    h = w = 192
    frame = np.full((h, w, 3), 90, np.uint8)
    boxes = [[20, 20, 80, 80], [110, 110, 170, 170]]
    out = _out(h, w, [0.9, 0.3], boxes, kept=list(range(64)))
    lines = detection_lines(out, (h, w), 0.5, 1, 10, anchor_thresh=0.1)
    assert "1 detection >= 0.5" in lines[1] and "2 anchors (score > 0.1, dashed)" in lines[1]
    img = render_detection(frame, out, ["x"], 0.5, 1, 10, anchor_thresh=0.1)
    none = render_detection(frame, out, ["x"], 0.5, 1, 10, anchor_thresh=0.95)
    right, right_none = img[:h, w + GAP :], none[:h, w + GAP :]
    diff = np.abs(right.astype(int) - right_none.astype(int)).sum(-1) > 0
    ys, xs = np.nonzero(diff)
    assert diff[110:171, 110:171].any(), "the 0.3 anchor (not a shown detection) is drawn"
    assert not diff[130:150, 130:150].any(), "outline only (dashed), no fill"
    assert 0.2 < diff[110, 110:171].mean() < 0.9, "dashed"
    assert xs.min() >= 18 and ys.max() <= 172


def test_dense_config_has_one_panel_and_no_heatmap_caption():
    h, w = 136, 200
    frame = np.full((h, w, 3), 90, np.uint8)
    out = _out(h, w, [0.9], [[10, 10, 50, 50]], kept=None, heatmap=False, frame_type="dense")
    img = render_detection(frame, out, ["x"], 0.5, 0, 3)
    assert img.shape[1] == w  # no empty right panel
    lines = detection_lines(out, (h, w), 0.5, 0, 3)
    assert not any("right:" in ln or "rollout heatmap" in ln for ln in lines)


def test_layout_scales_frames_geometry_and_boxes():
    lay = Layout(2.0)
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    big = lay.frame(frame)
    assert big.shape == (8, 12, 3) and (big[::2, ::2] == frame).all()
    g = lay.geometry(vis.TokenGeometry((2, 3), (2.0, 2.0), (0.5, 0.0)))
    assert g.cell == (4.0, 4.0) and g.origin == (1.0, 0.0)
    assert lay.boxes(np.array([[1, 2, 3, 4]])).tolist() == [[2, 4, 6, 8]]
    small = Layout(0.5).frame(np.zeros((101, 60, 3), np.uint8))
    assert small.shape[:2] == (50, 30)


def test_gif_has_one_shared_palette_and_every_frame(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for _ in range(11)]
    w = AtomicVideoWriter(str(tmp_path / "x.gif"), Fraction(25), gif_colors=64)
    for f in frames:
        w.write(f)
    path = w.commit()
    with Image.open(path) as im:
        assert im.n_frames == 11 and im.size == (80, 60)
        colours = set()
        for k in range(im.n_frames):
            im.seek(k)
            colours |= {c for _, c in im.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert len(colours) <= 64  # one palette of 64 colours for the whole video
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gif"]


def _clip(path, n=6, w=48, h=32, fmt=None):
    import av

    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(n):
            img = np.random.default_rng(t).integers(0, 255, (h, w, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_video_reader_streams_the_frames_of_decode_video(tmp_path):
    """One PyAV decoder: the renderer streams with rgtp_vivit.video.VideoReader, the frames decode_video returns."""
    from rgtp_vivit.video import VideoError, VideoReader, decode_video

    clip = _clip(tmp_path / "c.mp4")
    reader = VideoReader(str(clip))
    frames = list(reader)
    whole, fps = decode_video(str(clip))
    assert np.array_equal(np.stack(frames), whole) and float(reader.rate) == fps == 25
    assert reader.decoded == 6 and reader.problem == "" and reader.announced in (0, 6)
    with pytest.raises(VideoError, match="decodes once"):
        list(reader)
    with pytest.raises(VideoError, match="missing"):
        VideoReader(str(tmp_path / "nope.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="PyAV"):
        VideoReader(str(bad))
    cut = _clip(tmp_path / "cut.avi", n=40, fmt="avi")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    r = VideoReader(str(cut))
    n = sum(1 for _ in r)
    assert 0 < n < 40 and f"{n} of the 40 frames" in r.problem
