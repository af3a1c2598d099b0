"""Which tokens survive (method.md §3.2–§4.2): the frame schedule, grid patterns, and rollout-guided selection.

Kept indices are returned **sorted in raster order**. The official code orders them [foreground by descending score]
+ [background in raster order]; every consumer here is permutation-equivariant (attention, scatter into caches,
rollout restricted to kept tokens), so the outputs are the same and raster order gives better memory locality.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional, Tuple

import torch
from torch import Tensor

from .config import GRID_PATTERNS, RGTPConfig


class FrameType(str, Enum):
    """How a frame is processed: the first frame, a periodic reset frame, or a rollout-pruned frame."""

    FIRST = "first"
    RESET = "reset"
    PRUNED = "pruned"


def frame_type(t: int, reset_period: int) -> FrameType:
    """Frame type of frame (or tubelet) index ``t`` of a stream: t = 0 first; t > 0 and t % F == 0 reset."""
    if t == 0:
        return FrameType.FIRST
    if t % reset_period == 0:
        return FrameType.RESET
    return FrameType.PRUNED


def is_full_frame(ftype: FrameType, cfg: RGTPConfig) -> bool:
    """Whether a frame of this type is processed without pruning under ``cfg``."""
    if not cfg.enabled:
        return True
    if ftype == FrameType.FIRST:
        return cfg.first_frame_full
    if ftype == FrameType.RESET:
        return cfg.full_on_reset
    return False


def grid_pattern(pattern: str, grid: Tuple[int, int], device: torch.device | str = "cpu") -> Tensor:
    """Raster indices kept by a fixed grid pattern on an h×w grid (method.md §3.3).

    ``1in2``: a checkerboard (even rows keep even columns, odd rows keep odd columns), ⌈N/2⌉ tokens.
    ``1in4``: even rows keep even columns, odd rows nothing, ⌈h/2⌉·⌈w/2⌉ tokens. Correct on non-square grids.
    """
    h, w = grid
    if pattern == "1in2":
        keep = [y * w + x for y in range(h) for x in range(y % 2, w, 2)]
    elif pattern == "1in4":
        keep = [y * w + x for y in range(0, h, 2) for x in range(0, w, 2)]
    else:
        raise ValueError(f"unknown grid pattern {pattern!r}: allowed {GRID_PATTERNS}")
    return torch.tensor(
        keep, dtype=torch.long, device=device
    )  # no nonzero(): works on ``meta`` too


def num_selected(num_tokens: int, k_fg: int, fg_ratio: float = 1.0, bg_ratio: float = 0.0) -> int:
    """How many tokens :func:`select_tokens` keeps: strided foreground plus strided background."""
    fg_step = int(round(1.0 / fg_ratio))
    n_fg = (k_fg + fg_step - 1) // fg_step
    n_bg = 0
    if bg_ratio > 0:
        bg_step = int(round(1.0 / bg_ratio))
        n_bg = (num_tokens - k_fg + bg_step - 1) // bg_step
    return n_fg + n_bg


def select_tokens(
    scores: Tensor, k_fg: int, fg_ratio: float = 1.0, bg_ratio: float = 0.0, raster: bool = True
) -> Tensor:
    """Kept token indices ``(B, K)`` from importance ``scores`` ``(B, N)`` (method.md §4.2).

    1. Foreground = the ``k_fg`` highest scores (descending; ties to the lower index).
    2. If ``fg_ratio`` < 1, keep foreground ranks 0, s, 2s, … with s = round(1/fg_ratio).
    3. Background = the other tokens in raster order; if ``bg_ratio`` > 0 keep entries 0, s, 2s, … with
       s = round(1/bg_ratio).
    The result is raster-sorted when ``raster`` (default), else [foreground by score] + [background by raster].
    K is static: it depends only on N, ``k_fg`` and the ratios (:func:`num_selected`). No host synchronisation.
    """
    b, n = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    fg = order[:, :k_fg]
    fg_step = int(round(1.0 / fg_ratio))
    if fg_step > 1:
        fg = fg[:, ::fg_step]
    parts = [fg]
    if bg_ratio > 0 and k_fg < n:
        bg = torch.sort(order[:, k_fg:], dim=1).values
        parts.append(bg[:, :: int(round(1.0 / bg_ratio))])
    kept = torch.cat(parts, dim=1)
    return torch.sort(kept, dim=1).values if raster else kept


def random_tokens(
    batch: int, n: int, k: int, generator: Optional[torch.Generator], device=None
) -> Tensor:
    """The random-selection baseline: ``k`` of ``n`` tokens uniformly at random per row, raster-sorted."""
    noise = torch.rand(batch, n, generator=generator, device="cpu").to(device or "cpu")
    return torch.sort(torch.topk(noise, k, dim=1).indices, dim=1).values


def kept_mask(kept: Tensor, n: int) -> Tensor:
    """Boolean ``(B, N)`` mask of the kept indices ``(B, K)``."""
    mask = torch.zeros(kept.shape[0], n, dtype=torch.bool, device=kept.device)
    return mask.scatter_(1, kept, True)
