"""The video renderer behind ``tools/demo_video.py``: every frame of a video with the tokens RGTP computed (pruned
ones dimmed), the detections or classes, and the rollout heatmap that picks the next frame's tokens.

* :mod:`.source`: the frames (a video streamed by ``rgtp_vivit.video.VideoReader``, upright, or a folder of images);
* :mod:`.layout`: display scale, caption bar, anchor boxes, kept counts over the image tokens;
* :mod:`.frames`: one rendered frame per task; :mod:`.writer`: the ``.mp4`` / ``.gif`` writer (atomic);
* :mod:`.run`: :func:`render_video`, the whole video; :mod:`.cli`: the command line.

::

    from rgtp_apps.render import render_video

    render_video("configs/demo/vid_keep64.yaml", "clip.mp4", "out.mp4")
"""

from .cli import get_parser, main
from .configs import config_task, resolve_task, setup_detection_cfg, setup_recognition_cfg
from .frames import detection_lines, recognition_lines, render_detection, render_recognition
from .layout import CaptionBar, Layout, display_scale, token_count
from .run import GIF_MAX_SIZE, RenderResult, render_video, run_detection, run_recognition
from .source import DemoError, FrameSource
from .writer import GIF_COLORS, AtomicVideoWriter

__all__ = [
    "main",
    "get_parser",
    "render_video",
    "RenderResult",
    "GIF_MAX_SIZE",
    "GIF_COLORS",
    "DemoError",
    "FrameSource",
    "AtomicVideoWriter",
    "Layout",
    "CaptionBar",
    "display_scale",
    "token_count",
    "render_detection",
    "render_recognition",
    "detection_lines",
    "recognition_lines",
    "run_detection",
    "run_recognition",
    "setup_detection_cfg",
    "setup_recognition_cfg",
    "config_task",
    "resolve_task",
]
