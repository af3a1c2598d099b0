"""Step-by-step recognition of one clip for visualisation: per-tubelet kept tokens, rollout heatmap, FLOPs and time.

:func:`recognize_clip` runs the ViViT of this package (its public ``embed``, ``spatial`` and ``head``) one tubelet
step at a time with a fresh :class:`rgtp.cls_vit.ClsViTState`, recording what RGTP did at each step; the logits equal
``model(x)["logits"]``. :func:`clip_view` builds the single centre view the demo feeds it and
:func:`view_geometry` places the view's token grid on the original frames.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from fvcore.common.config import CfgNode
from torch import Tensor

from rgtp.counting import FlopCounter

from .config import dataset_root
from .video import make_views, resized_shape, spatial_offsets

__all__ = [
    "StepInfo",
    "ClipResult",
    "recognize_clip",
    "clip_view",
    "view_geometry",
    "step_of_frame",
    "class_names",
]

logger = logging.getLogger(__name__)


@dataclass
class StepInfo:
    """What happened at one tubelet step of the spatial model.

    Attributes:
        frame_type: ``"first"``, ``"reset"``, ``"pruned"`` or ``"dense"``.
        kept: ``(K,)`` raster indices of the kept patch tokens, or None when the step ran on every token.
        num_tokens: N, the patch tokens of the grid.
        heatmap: ``(N,)`` class-token rollout of the step (selects the next step's tokens), None for a dense model.
        gflops: executed GFLOPs of the step (spatial model only); gflops_paper: the paper convention.
        ms: wall time of the step in milliseconds.
    """

    frame_type: str
    kept: Optional[Tensor]
    num_tokens: int
    heatmap: Optional[Tensor]
    gflops: float
    gflops_paper: float
    ms: float


@dataclass
class ClipResult:
    """Logits ``(B, classes)`` of the clip, the per-step records (of view 0) and the temporal head's GFLOPs."""

    logits: Tensor
    steps: List[StepInfo]
    head_gflops: float


@torch.inference_mode()
def recognize_clip(model: torch.nn.Module, x: Tensor) -> ClipResult:
    """Run ``model`` (a :class:`rgtp_vivit.models.ViViT`) on clips ``(B, 3, T_in, H, W)`` step by step."""
    emb = model.embed(x)
    spatial = model.spatial
    state = spatial.new_state() if spatial.pruning else None
    feats = []
    steps: List[StepInfo] = []
    n = emb.shape[2]
    for t in range(emb.shape[1]):
        start = time.perf_counter()
        with FlopCounter() as counter:
            feats.append(spatial(emb[:, t], state))
        ms = 1000.0 * (time.perf_counter() - start)
        if state is not None:
            kept = None if state.kept is None else state.kept[0].detach().cpu().clone()
            heat = (
                None if state.heatmap is None else state.heatmap[0].detach().float().cpu().clone()
            )
            ftype = state.frame_type.value if state.frame_type is not None else "dense"
        else:
            kept, heat, ftype = None, None, "dense"
        steps.append(
            StepInfo(
                ftype, kept, n, heat, counter.executed.total / 1e9, counter.paper.total / 1e9, ms
            )
        )
    with FlopCounter() as counter:
        logits = model.head(torch.stack(feats, dim=1))["logits"]
    return ClipResult(logits.float().cpu(), steps, counter.executed.total / 1e9)


def clip_view(frames: np.ndarray, cfg: CfgNode) -> Tensor:
    """The centre view ``(1, 3, NUM_FRAMES, crop, crop)`` of ``frames`` ``(L, H, W, 3)`` uint8 (the test transform
    of the config with one temporal and one spatial view; a clip shorter than a view repeats its last frame).
    """
    return make_views(
        frames,
        cfg.DATA.NUM_FRAMES,
        cfg.DATA.SAMPLING_RATE,
        1,
        1,
        cfg.DATA.TEST_CROP_SIZE,
        cfg.DATA.TEST_SHORT_SIDE,
        cfg.DATA.MEAN,
        cfg.DATA.STD,
    )


def view_geometry(
    height: int, width: int, cfg: CfgNode
) -> Tuple[Tuple[int, int], Tuple[float, float], Tuple[float, float]]:
    """Token grid, cell size and grid origin (both in original frame pixels) of the centre view of a
    ``height × width`` video: ``(grid, (cell_h, cell_w), (y0, x0))``."""
    short, crop, p = cfg.DATA.TEST_SHORT_SIDE, cfg.DATA.TEST_CROP_SIZE, cfg.VIVIT.PATCH_SIZE
    nh, nw = resized_shape(height, width, short)
    if nw >= nh:
        y0, x0 = (nh - crop) // 2, spatial_offsets(nw, crop, 1)[0]
    else:
        x0, y0 = (nw - crop) // 2, spatial_offsets(nh, crop, 1)[0]
    sy, sx = height / nh, width / nw
    side = crop // p
    return (side, side), (p * sy, p * sx), (y0 * sy, x0 * sx)


def step_of_frame(offset: int, cfg: CfgNode, num_steps: int) -> int:
    """The tubelet step that frame ``offset`` of a clip (counted from the clip's first frame) falls into."""
    sampled = offset // cfg.DATA.SAMPLING_RATE
    return min(sampled // cfg.VIVIT.TUBELET_SIZE, num_steps - 1)


def class_names(cfg: CfgNode, path: str = "", num_classes: Optional[int] = None) -> List[str]:
    """Class names: ``path`` if given, else ``MODEL.CLASS_NAMES``, else ``DATA.CLASS_NAMES_FILE`` (relative to the data root), else the data
    root's ``classes.txt``; ``class <i>`` when none exists or the count does not match ``MODEL.NUM_CLASSES``.
    """
    k = int(num_classes or cfg.MODEL.NUM_CLASSES)
    own = list(getattr(cfg.MODEL, "CLASS_NAMES", []) or [])
    if not path and len(own) == k:
        return own  # the model's own class list (MODEL.CLASS_NAMES)
    root = dataset_root(cfg.DATA.PATH_TO_DATA_DIR)
    candidates: Sequence[str] = [path] if path else []
    if not path:
        if cfg.DATA.CLASS_NAMES_FILE:
            f = cfg.DATA.CLASS_NAMES_FILE
            candidates = [f if os.path.isabs(f) else os.path.join(root, f)]
        else:
            candidates = [os.path.join(root, "classes.txt")]
    for f in candidates:
        if os.path.isfile(f):
            with open(f) as fh:
                names = [ln.strip() for ln in fh if ln.strip()]
            if len(names) == k:
                return names
            logger.warning(
                "%s has %d class names, the model has %d classes: using indices", f, len(names), k
            )
        elif path:
            raise FileNotFoundError(f"class names file not found: {path}")
    return [f"class {i}" for i in range(k)]
