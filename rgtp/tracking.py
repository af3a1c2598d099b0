"""Token tracking (docs/method.md §3.1): the local backward warp of the previous heatmap.

Each current token p takes the heatmap value of the previous-frame token p+δ, |δ|∞ ≤ radius, whose raw patch
embedding has the largest (unnormalised) dot product with its own; ties go to the first offset in raster order
(dy outer, dx inner), i.e. (−r, −r). Candidates outside the grid follow ``border``:

* ``"exclude"`` (clean): they never win.
* ``"official"`` (the official code): their similarity is −100 (the dot product with a zero-padded embedding, 0,
  replaced by −100) and their source is token 0, so when every in-grid similarity is below −100 an out-of-grid
  candidate wins and the token takes the heatmap value of token 0.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import counting
from .config import TRACKING_BORDERS

#: The similarity the official code gives an out-of-grid candidate (``border="official"``).
OFFICIAL_OUTSIDE_SIMILARITY = -100.0


def neighbour_offsets(radius: int) -> list[tuple[int, int]]:
    """The (dy, dx) offsets of a (2r+1)² neighbourhood in raster order (dy outer, dx inner)."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def best_offsets(
    emb: Tensor,
    prev_emb: Tensor,
    grid: Tuple[int, int],
    radius: int = 1,
    border: str = "exclude",
) -> Tensor:
    """Index into the flattened previous grid of each current token's best match, ``(B, N)`` long.

    ``emb`` and ``prev_emb`` are ``(B, N, C)`` raw patch embeddings; ``border`` is ``"exclude"`` or
    ``"official"`` (module docstring). Counts N·(2r+1)²·C matmul MACs. No host synchronisation.
    """
    return match_previous(emb, prev_emb, grid, radius, border)[0]


def match_quality(emb: Tensor, prev_emb: Tensor, source: Tensor, similarity: Tensor) -> Tensor:
    """How well a frame matches the previous one, ``(B,)``: the mean over tokens of the cosine similarity between
    each token's raw patch embedding and its best match (``source``, ``similarity`` from :func:`match_previous`).
    Near 1 for a continuing shot, it collapses at a cut. Counts 2·N·C matmul MACs (the two norms).
    """
    b, n, c = emb.shape
    matched = prev_emb.gather(1, source.unsqueeze(-1).expand(-1, -1, c))
    counting.charge("matmul", 2 * b * n * c)
    norms = emb.norm(dim=-1) * matched.norm(dim=-1)
    cosine = similarity / norms.clamp(min=torch.finfo(emb.dtype).tiny)
    return cosine.clamp(-1.0, 1.0).mean(dim=-1)


def match_previous(
    emb: Tensor,
    prev_emb: Tensor,
    grid: Tuple[int, int],
    radius: int = 1,
    border: str = "exclude",
) -> Tuple[Tensor, Tensor]:
    """Each current token's best match in the previous frame: its source index ``(B, N)`` long (as
    :func:`best_offsets`) and the winning similarity ``(B, N)`` (an unnormalised dot product)."""
    if border not in TRACKING_BORDERS:
        raise ValueError(f"unknown tracking border={border!r}: allowed {TRACKING_BORDERS}")
    official = border == "official"
    b, n, c = emb.shape
    h, w = grid
    prev = prev_emb.reshape(b, h, w, c).permute(0, 3, 1, 2)
    padded = F.pad(prev, (radius, radius, radius, radius))
    ys = torch.arange(h, device=emb.device)
    xs = torch.arange(w, device=emb.device)
    outside = float(OFFICIAL_OUTSIDE_SIMILARITY) if official else float("-inf")
    sims, sources = [], []
    cur = emb.reshape(b, h, w, c)
    for dy, dx in neighbour_offsets(radius):
        shifted = padded[:, :, radius + dy : radius + dy + h, radius + dx : radius + dx + w]
        sim = (cur * shifted.permute(0, 2, 3, 1)).sum(-1)  # (B, h, w)
        ok = ((ys + dy >= 0) & (ys + dy < h))[:, None] & ((xs + dx >= 0) & (xs + dx < w))[None, :]
        sims.append(torch.where(ok, sim, torch.full_like(sim, outside)))
        sy = (ys + dy).clamp(0, h - 1)[:, None]
        sx = (xs + dx).clamp(0, w - 1)[None, :]
        src = sy * w + sx
        sources.append(torch.where(ok, src, torch.zeros_like(src)) if official else src)
    counting.charge("matmul", n * len(sims) * c * b)
    best, choice = torch.stack(sims, dim=-1).max(dim=-1)  # first maximum wins ties
    table = torch.stack(sources, dim=-1).reshape(1, n, -1).expand(b, n, -1)  # (B, N, (2r+1)²)
    return table.gather(2, choice.reshape(b, n, 1)).squeeze(2), best.reshape(b, n)


def warp_heatmap(
    heatmap: Tensor,
    emb: Tensor,
    prev_emb: Tensor,
    grid: Tuple[int, int],
    radius: int = 1,
    border: str = "exclude",
) -> Tensor:
    """Backward-warp ``heatmap`` ``(B, N)`` of frame t−1 to frame t; ``radius=0`` returns it unchanged.

    ``border`` decides whether out-of-grid candidates can win (:func:`best_offsets`)."""
    if radius == 0:
        return heatmap
    src = best_offsets(emb, prev_emb, grid, radius, border=border)
    return heatmap.gather(1, src)
