"""Streaming inference on one video, frame by frame, in the style of detectron2's ``DefaultPredictor``.

::

    from rgtp_vitdet.predictor import VideoPredictor

    predictor = VideoPredictor(cfg)          # builds RGTPVideoRCNN, loads cfg.MODEL.WEIGHTS
    for frame in frames:                     # HxWx3 uint8, BGR by default (input_format="RGB" for PyAV/PIL)
        out = predictor(frame)
        out["instances"]                     # detections in frame pixels
        out["kept"], out["heatmap"]          # tokens computed on this frame, rollout importance from it
    predictor.reset()                        # before the next video (automatic when the frame size changes)

The predictor applies the test-time resize of the config (short edge ``INPUT.MIN_SIZE_TEST``, long edge at most
``INPUT.MAX_SIZE_TEST``, bilinear with antialias), lets the model normalise and pad to the square
``MODEL.VIT.INPUT_SIZE`` canvas, and carries the rollout state of one stream from call to call.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from rgtp.state import StreamState

from .config import behaviour_setting, validate_config
from .data import resize_frame, resized_shape
from .engine import load_weights

__all__ = ["VideoPredictor"]

logger = logging.getLogger("detectron2.rgtp_vitdet.predictor")


class VideoPredictor:
    """Run the RGTP video detector on the frames of one video, one call per frame, carrying the rollout state.
    A frame whose size differs from the previous frame's starts a new video by itself (logged); call
    :meth:`reset` between two videos of one size.

    ``predictor(frame)`` takes an ``(H, W, 3)`` uint8 frame (any size) and returns a dict with:

    * ``instances``: detectron2 ``Instances`` in frame pixels (``pred_boxes``, ``scores``, ``pred_classes``), on CPU;
    * ``heatmap``: ``(N,)`` float tensor, the rollout importance computed from this frame's detections over the
      token grid of the padded canvas (it selects the tokens of the next frame), or None for the dense model;
    * ``kept``: ``(K,)`` raster indices of the tokens computed on this frame, or None on a full (first / reset)
      frame and for the dense model;
    * ``frame_type``: ``"first"``, ``"reset"``, ``"pruned"`` or ``"dense"``;
    * ``gflops`` / ``gflops_paper``: backbone GFLOPs of this frame (executed / paper convention; None when
      ``MODEL.RGTP.COUNT_FLOPS`` is off);
    * ``ms``: wall time of the model call in milliseconds;
    * ``grid``: the token grid ``(gh, gw)`` of the canvas and ``cell``: ``(cell_h, cell_w)``, the size of one
      token in frame pixels (``rgtp.visualize.TokenGeometry(grid, cell)`` places token maps on the frame).

    Args:
        cfg: a detectron2 config with ``add_rgtp_config`` keys (validated here; not modified).
        input_format: channel order of the frames given to ``__call__``: ``"BGR"`` (OpenCV, detectron2's
            default) or ``"RGB"`` (PyAV, PIL); converted to ``cfg.INPUT.FORMAT``.
    """

    def __init__(self, cfg: CfgNode, input_format: str = "BGR") -> None:
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.cfg = cfg.clone()
        self.cfg.defrost()
        if self.cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            logger.warning(
                "MODEL.DEVICE=%s but CUDA is not available: using the CPU", self.cfg.MODEL.DEVICE
            )
            self.cfg.MODEL.DEVICE = "cpu"
        validate_config(self.cfg)
        self.cfg.freeze()
        self.model = build_model(self.cfg)
        self.model.eval()
        load_weights(self.cfg, self.model)
        self.input_format = input_format
        self.short_edge = int(self.cfg.INPUT.MIN_SIZE_TEST)
        self.max_size = int(self.cfg.INPUT.MAX_SIZE_TEST)
        self.patch_size = int(self.cfg.MODEL.VIT.PATCH_SIZE)
        self.canvas = int(self.cfg.MODEL.VIT.INPUT_SIZE)
        self.rounding = behaviour_setting(self.cfg, "RESIZE_ROUNDING")
        self._stream = 0
        self._t = 0
        self._size: Optional[tuple] = None

    @property
    def video_id(self) -> str:
        """The id under which the model keeps this predictor's stream state."""
        return f"__video_predictor_{id(self)}_{self._stream}"

    @property
    def frame_index(self) -> int:
        """Index of the next frame of the current video."""
        return self._t

    def reset(self) -> None:
        """Start a new video: the next frame is processed as a first (full) frame."""
        if hasattr(self.model, "reset_streams"):
            self.model.reset_streams()
        self._stream += 1
        self._t = 0
        self._size = None

    def state(self) -> Optional[StreamState]:
        """The stream state of the current video (None before its first frame or for the dense model)."""
        if not hasattr(self.model, "stream_state"):
            return None
        return self.model.stream_state(self.video_id)

    def __call__(self, frame: np.ndarray) -> Dict[str, Any]:
        """Detect on the next frame of the current video; see the class docstring for the returned dict."""
        img = np.asarray(frame)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 frame, got shape {img.shape} dtype {img.dtype}"
            )
        if self.input_format != self.cfg.INPUT.FORMAT:
            img = img[:, :, ::-1]
        h, w = img.shape[:2]
        if self._size is not None and self._size != (h, w):
            # A frame of another size is another video: its tokens do not match the carried state.
            logger.info(
                "frame size changed from %dx%d to %dx%d: resetting (a new video; its first frame is full)",
                self._size[1],
                self._size[0],
                w,
                h,
            )
            self.reset()
        self._size = (h, w)
        size = resized_shape(h, w, self.short_edge, self.max_size)
        inputs = {
            "image": resize_frame(np.ascontiguousarray(img), size, self.rounding),
            "height": h,
            "width": w,
            "video_id": self.video_id,
            "frame_index": self._t,
        }
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model([inputs])[0]
            if torch.cuda.is_available() and self.cfg.MODEL.DEVICE.startswith("cuda"):
                torch.cuda.synchronize()
        ms = 1000.0 * (time.perf_counter() - start)
        self._t += 1
        stats = out.get("rgtp", {})
        state = self.state()
        grid = state.grid if state is not None and state.grid is not None else None
        if grid is None:
            side = self.canvas // self.patch_size
            grid = (side, side)
        heatmap = kept = None
        if state is not None:
            heatmap = (
                state.heatmap.detach().float().cpu().clone() if state.heatmap is not None else None
            )
            kept = state.kept.detach().cpu().clone() if state.kept is not None else None
        return {
            "instances": out["instances"].to("cpu"),
            "heatmap": heatmap,
            "kept": kept,
            "frame_type": str(stats.get("frame_type", "dense")),
            "gflops": stats.get("gflops_executed"),
            "gflops_paper": stats.get("gflops_paper"),
            "ms": ms,
            "grid": tuple(grid),
            "cell": (self.patch_size * h / size[0], self.patch_size * w / size[1]),
        }
