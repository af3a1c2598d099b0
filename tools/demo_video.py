#!/usr/bin/env python
"""Render what RGTP keeps, frame by frame, on any video (detectron2 demo style).

With the committed demo models (they know only the generated demo data: on real footage they mislabel things)::

    python tools/demo_video.py --config-file configs/demo/vid_keep64.yaml --input clip.mp4 --output out.mp4
    python tools/demo_video.py --config-file configs/demo/kin_keep14.yaml --input clip.mp4 --output out.gif

With the paper's checkpoints (MODEL_ZOO.md)::

    python tools/demo_video.py --config-file configs/vid/keep512.yaml --input clip.mp4 --output out.mp4 \
        --opts MODEL.WEIGHTS checkpoints/frcnn_vitdet_final.pth

``--input`` is a video file that PyAV can read (any container, any resolution) or a folder of frames (sorted by
name). Every output frame shows, left, the frame with the tokens computed on it (pruned ones dimmed) and the
detections and, right, the rollout heatmap with its anchors (a dense config has no heatmap: one panel); a caption
bar gives the frame type, the kept tokens over the tokens on the image (padding apart), GFLOPs and milliseconds (and
the top-5 classes for recognition). ``--max-size`` bounds the panels (a GIF defaults to 640 pixels), ``--max-frames``
renders the start only. The output (``.mp4`` or ``.gif``) has one frame per input frame and is renamed into place
when complete. A truncated video is rendered as far as it decodes, with a warning (``--strict``: an error before any
output). Errors are one line ``error: ...`` with exit status 2 (``--debug`` shows the traceback). The code is
:mod:`rgtp_apps.render` (``render_video`` from Python).
"""

import logging
import sys

from rgtp_apps.render.cli import get_parser, main

from rgtp.cli import run_main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run_main(main))
