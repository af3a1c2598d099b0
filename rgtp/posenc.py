"""Position encodings of the ViTDet backbone: the absolute table resized to the token grid and the decomposed
relative-position tables resized to the attention grid, with both interpolations of docs/method.md §6.1.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_abs_pos(pos_embed: Tensor, has_cls_token: bool, grid: Tuple[int, int]) -> Tensor:
    """The absolute table ``(1, [1+]M², C)`` without its class entry, bicubically resized (align_corners=False) to
    ``(1, h, w, C)``."""
    table = pos_embed[:, 1:] if has_cls_token else pos_embed
    side = int(math.isqrt(table.shape[1]))
    if side * side != table.shape[1]:
        raise ValueError(
            f"absolute position table of {table.shape[1]} entries is not a square grid"
        )
    img = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if (side, side) != tuple(grid):
        img = F.interpolate(img, size=grid, mode="bicubic", align_corners=False)
    return img.permute(0, 2, 3, 1)


def relative_matrix(table: Tensor, size: int, mode: str = "paper") -> Tensor:
    """The ``(size, size, d)`` relative-position matrix R[i, j] ≈ table[i − j + E − 1] for a ``(2E−1, d)`` table.

    When ``size`` ≠ E: ``paper`` builds the E×E×d matrix and resizes it as a d-channel image bicubically to
    size×size (what the published numbers use); ``detectron2`` resizes the 1-D table linearly to 2·size−1 entries
    first (detectron2's ViTDet).
    """
    e = (table.shape[0] + 1) // 2
    if size == e:
        return _gather_relative(table, size)
    if mode == "paper":
        full = _gather_relative(table, e).permute(2, 0, 1).unsqueeze(0)  # (1, d, E, E)
        resized = F.interpolate(full, size=(size, size), mode="bicubic", align_corners=False)
        return resized.squeeze(0).permute(1, 2, 0)
    if mode == "detectron2":
        length = 2 * size - 1
        t = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear").squeeze(0).t()
        return _gather_relative(t, size)
    raise ValueError(
        f"unknown relative-position interpolation {mode!r}: allowed ('paper', 'detectron2')"
    )


def _gather_relative(table: Tensor, size: int) -> Tensor:
    idx = torch.arange(size, device=table.device)
    rel = idx[:, None] - idx[None, :] + (table.shape[0] - 1) // 2
    return table[rel]
