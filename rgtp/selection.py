"""Which tokens survive (docs/method.md §3.2–§4.2): the frame schedule, grid patterns, and rollout-guided selection.

Kept indices are returned **sorted in raster order**. The official code orders them [foreground by descending score]
+ [background in raster order]; every consumer here is permutation-equivariant (attention, scatter into caches,
rollout restricted to kept tokens), so the outputs are the same and raster order gives better memory locality.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import counting
from .config import GRID_PATTERNS, TIE_BREAKS, RGTPConfig


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
    """Raster indices kept by a fixed grid pattern on an h×w grid (docs/method.md §3.3).

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
    scores: Tensor,
    k_fg: int,
    fg_ratio: float = 1.0,
    bg_ratio: float = 0.0,
    raster: bool = True,
    ties: str = "low",
) -> Tensor:
    """Kept token indices ``(B, K)`` from importance ``scores`` ``(B, N)`` (docs/method.md §4.2).

    1. Foreground = the ``k_fg`` highest scores, in descending order. Exactly equal scores are ordered by index:
       ``ties="low"`` puts the lower index first (a stable sort; the clean behaviour), ``ties="high"`` the higher
       index first (what the official code's unstable sort gives on the CPU). The rule decides which of several
       tied tokens straddling rank ``k_fg`` are kept, and, with ``fg_ratio`` < 1, which lands on a kept rank.
    2. If ``fg_ratio`` < 1, keep foreground ranks 0, s, 2s, … with s = round(1/fg_ratio).
    3. Background = the other tokens in raster order; if ``bg_ratio`` > 0 keep entries 0, s, 2s, … with
       s = round(1/bg_ratio).
    The result is raster-sorted when ``raster`` (default), else [foreground by score] + [background by raster].
    K is static: it depends only on N, ``k_fg`` and the ratios (:func:`num_selected`). No host synchronisation.
    """
    b, n = scores.shape
    if ties == "low":
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    elif ties == "high":
        # a stable sort of the reversed row lists tied entries from the highest index down; map back
        order = (n - 1) - torch.sort(scores.flip(1), dim=1, descending=True, stable=True).indices
    else:
        raise ValueError(f"unknown tie rule ties={ties!r}: allowed {TIE_BREAKS}")
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


def kept_count(cfg: Optional[RGTPConfig], grid: Tuple[int, int], ftype: FrameType) -> int:
    """K: the patch tokens a frame (or tubelet step) of type ``ftype`` keeps on an h×w ``grid`` under ``cfg``.

    The one rule behind every kept count (the models' schedules, the FLOP closed forms, the tools):

    * no config, pruning disabled, or a frame processed fully (:func:`is_full_frame`): all N = h·w tokens;
    * a pruned frame: the strided foreground of ``cfg.num_keep(N)`` plus the strided background
      (:func:`num_selected` with ``fg_sample_ratio`` / ``bg_sample_ratio``), as :func:`select_tokens` keeps;
    * a reset frame not processed fully: the tokens of ``cfg.reset_pattern`` (:func:`grid_pattern`);
    * a first frame not processed fully (``first_frame_full=False``) has no heatmap yet: the reset pattern when
      reset frames use one (``full_on_reset=False``), else all N.

    Static per configuration and grid (docs/method.md §3.4): it never depends on the video.
    """
    h, w = grid
    n = h * w
    if cfg is None or is_full_frame(ftype, cfg):
        return n
    if ftype == FrameType.PRUNED:
        return num_selected(n, cfg.num_keep(n), cfg.fg_sample_ratio, cfg.bg_sample_ratio)
    if cfg.full_on_reset or cfg.reset_pattern is None:
        return n
    return int(grid_pattern(cfg.reset_pattern, grid, device="meta").numel())


def change_scores(emb: Tensor, computed: Tensor) -> Tensor:
    """Scores of the ``change`` selection (an Eventful-style baseline), ``(B, N)``: the squared L2 distance between
    each token's raw patch embedding ``emb`` (B, N, C) and the embedding it had on the frame it was last computed
    ``computed`` (B, N, C). The top-K of these are the tokens that changed most. Counts N·C adds (the difference)
    and N·C matmul MACs (the squared norm)."""
    diff = counting.add(emb, -computed)
    counting.charge("matmul", diff.numel())
    return diff.square().sum(dim=-1)
