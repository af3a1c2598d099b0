"""Render a whole video: decode, run the model frame by frame (detection) or clip by clip (recognition), draw, write.

::

    from rgtp_apps.render import render_video

    result = render_video("configs/demo/vid_keep64.yaml", "clip.mp4", "out.gif", max_frames=40)
    result.frames, result.path, result.problem     # frames written, the output, why decoding stopped early ('')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from rgtp import visualize as vis

from .configs import resolve_task, setup_detection_cfg, setup_recognition_cfg
from .frames import is_dense, render_detection, render_recognition
from .layout import GAP, MIN_SIDE, CaptionBar, Layout, display_scale
from .source import DemoError, FrameSource
from .writer import GIF_COLORS, AtomicVideoWriter

__all__ = ["GIF_MAX_SIZE", "RenderResult", "render_video", "run_detection", "run_recognition"]

logger = logging.getLogger("rgtp.demo_video")

#: Default ``max_size`` of a GIF output (the longer side of the panels): GIFs are for README pages and chats.
GIF_MAX_SIZE = 640


@dataclass
class RenderResult:
    """What :func:`render_video` wrote: the output path, the frames, the task and the display scale; ``problem``
    says why a video stopped decoding early ('' when it did not)."""

    path: str
    frames: int
    task: str
    scale: float
    problem: str = ""


class _Canvas:
    """The layout and caption bar of one video, fixed by its first frame."""

    def __init__(self, max_size: int, min_size: int = MIN_SIDE) -> None:
        self.max_size = max_size
        self.min_size = min_size
        self.layout: Optional[Layout] = None
        self.bar: Optional[CaptionBar] = None

    def fix(self, frame: np.ndarray, panels: int) -> Tuple[Layout, CaptionBar]:
        if self.layout is None:
            h, w = frame.shape[:2]
            self.layout = Layout(display_scale(h, w, panels, self.max_size, self.min_size))
            shown = self.layout.frame(frame)
            width = panels * shown.shape[1] + GAP * (panels - 1)
            self.bar = CaptionBar(width)
        return self.layout, self.bar


def _frames(source: FrameSource, max_frames: int):
    for i, frame in enumerate(source):
        if max_frames and i >= max_frames:
            break
        yield frame


def _total(source: FrameSource, max_frames: int) -> Optional[int]:
    """The frames that will be rendered, when known."""
    if source.count and max_frames:
        return min(source.count, max_frames)
    return source.count


def _detection_names(cfg) -> List[str]:
    from rgtp_vitdet import VID_CLASSES

    k = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    return list(VID_CLASSES) if len(VID_CLASSES) == k else [f"class {i}" for i in range(k)]


def run_detection(
    cfg,
    source: FrameSource,
    writer: AtomicVideoWriter,
    thresh: float = 0.5,
    max_size: int = 0,
    max_frames: int = 0,
    min_size: int = MIN_SIDE,
) -> float:
    """Detect on every frame of ``source`` with one carried stream state and write the rendered frames; returns
    the display scale."""
    from rgtp_vitdet.predictor import VideoPredictor

    predictor = VideoPredictor(cfg, input_format="RGB")
    names = _detection_names(predictor.cfg)
    anchor = float(predictor.cfg.MODEL.RGTP.ANCHOR_SCORE_THRESH)
    canvas = _Canvas(max_size, min_size)
    total = _total(source, max_frames)
    for i, frame in enumerate(
        tqdm(_frames(source, max_frames), total=total, desc="rendering", unit="frame")
    ):
        out = predictor(frame)
        layout, bar = canvas.fix(frame, 1 if is_dense(out["frame_type"]) else 2)
        writer.write(render_detection(frame, out, names, thresh, i, total, layout, anchor, bar))
    return canvas.layout.scale if canvas.layout else 1.0


def run_recognition(
    cfg,
    source: FrameSource,
    writer: AtomicVideoWriter,
    class_names: str = "",
    max_size: int = 0,
    max_frames: int = 0,
    min_size: int = MIN_SIDE,
) -> float:
    """Classify consecutive clips of ``NUM_FRAMES x SAMPLING_RATE`` frames (one centre view each) and render every
    frame with the heatmap of its tubelet and the clip's top-5 classes; returns the display scale.
    """
    import torch
    from rgtp_vivit.distributed import device_for
    from rgtp_vivit.test_net import build_test_model
    from rgtp_vivit.visualize import class_names as model_class_names
    from rgtp_vivit.visualize import clip_view, recognize_clip, step_of_frame, view_geometry

    device = device_for(cfg)
    model = build_test_model(cfg, cfg.TEST.CHECKPOINT_FILE_PATH, device)
    names = model_class_names(cfg, class_names or "")
    span = cfg.DATA.NUM_FRAMES * cfg.DATA.SAMPLING_RATE
    total = _total(source, max_frames)
    bar = tqdm(total=total, desc="rendering", unit="frame")
    canvas = _Canvas(max_size, min_size)
    chunk: List[np.ndarray] = []
    done = 0

    def flush() -> None:
        nonlocal done
        frames = np.stack(chunk)
        h, w = frames.shape[1:3]
        res = recognize_clip(model, clip_view(frames, cfg).to(device))
        probs = torch.softmax(res.logits[0], dim=0)
        top = torch.topk(probs, min(5, probs.numel()))
        top5 = ", ".join(
            f"{names[i]} {100 * p:.0f}%" for p, i in zip(top.values.tolist(), top.indices.tolist())
        )
        geom = vis.TokenGeometry(*view_geometry(h, w, cfg))
        steps = len(res.steps)
        for o, frame in enumerate(chunk):
            t = step_of_frame(o, cfg, steps)
            st = res.steps[t]
            layout, caption = canvas.fix(frame, 1 if is_dense(st.frame_type) else 2)
            writer.write(
                render_recognition(frame, st, geom, done, total, t, steps, top5, layout, caption)
            )
            done += 1
            bar.update(1)
        chunk.clear()

    try:
        for frame in _frames(source, max_frames):
            chunk.append(frame)
            if len(chunk) == span:
                flush()
        if chunk:
            flush()
    finally:
        bar.close()
    return canvas.layout.scale if canvas.layout else 1.0


def render_video(
    config_file: str,
    input: str,
    output: str,
    task: Optional[str] = None,
    opts: Sequence[str] = (),
    confidence_threshold: float = 0.5,
    fps: Optional[float] = None,
    strict: bool = False,
    class_names: str = "",
    save_frame: Optional[Tuple[int, str]] = None,
    max_size: Optional[int] = None,
    max_frames: int = 0,
    gif_colors: int = GIF_COLORS,
    min_size: int = MIN_SIDE,
) -> RenderResult:
    """Render ``input`` (a video file or a folder of frames) with the model of ``config_file`` to ``output``
    (``.mp4`` or ``.gif``); the options are those of ``tools/demo_video.py``. ``max_size``: the longer side of the
    panels in pixels (None: :data:`GIF_MAX_SIZE` for a GIF, no limit for an mp4; 0: no limit); ``min_size``: frames
    whose short side is smaller are enlarged by a whole factor to reach it (0: never). Raises
    :class:`DemoError` (and the projects' config and checkpoint errors) for unusable input; nothing is left at
    ``output`` (nor a temporary file) when it fails."""
    task = resolve_task(config_file, task)
    source = FrameSource(input, fps)
    writer: Optional[AtomicVideoWriter] = None
    try:
        if strict:
            source.probe()
        total = _total(source, max_frames)
        if save_frame is not None and total and save_frame[0] >= total:
            limit = f" (--max-frames {max_frames})" if max_frames and max_frames == total else ""
            raise DemoError(
                f"--save-frame {save_frame[0]}: {input!r} has {total} frames{limit} (indices 0 to "
                f"{total - 1})"
            )
        writer = AtomicVideoWriter(output, source.fps, gif_colors)
        if save_frame is not None:
            writer.save_frame = tuple(save_frame)
        if max_size is None:
            max_size = GIF_MAX_SIZE if writer.ext == ".gif" else 0
        if task == "detection":
            cfg = setup_detection_cfg(config_file, opts)
            scale = run_detection(
                cfg, source, writer, confidence_threshold, max_size, max_frames, min_size
            )
        else:
            cfg = setup_recognition_cfg(config_file, opts)
            scale = run_recognition(
                cfg, source, writer, class_names, max_size, max_frames, min_size
            )
        if save_frame is not None and save_frame[0] >= writer.count:
            raise DemoError(
                f"--save-frame {save_frame[0]}: {input!r} has {writer.count} frames (indices 0 to "
                f"{writer.count - 1}); nothing written"
            )
        path = writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        source.close()
    return RenderResult(path, writer.count, task, scale, source.problem)
