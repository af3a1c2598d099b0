"""Attention rollout (docs/method.md §2): head fusion, residual + row normalisation, forward and backward forms,
the 2×2-pooled variant used at 672, reading importance at anchor rows or at the class row, and the stream update
that carries each rollout block's attention buffer from frame to frame (:func:`update_streams`).

Shapes: matrices are batched ``(B, Q, K)`` with rows = queries (outputs) and columns = keys (inputs). Grids are
``(h, w)`` token grids in raster order. Everything here is free of host synchronisation and works on ``meta``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import counting
from .config import HEAD_FUSIONS, ConfigError
from .state import stack_rows

if TYPE_CHECKING:
    from .config import RGTPConfig
    from .state import StreamState


def fuse_heads(probs: Tensor, mode: str = "rms", inplace: bool = False) -> Tensor:
    """Fuse attention probabilities ``(B, H, Q, K)`` over heads into ``(B, Q, K)``.

    ``rms`` (the paper): sqrt(mean_h P_h²); ``mean``: mean_h P_h; ``max``: max_h P_h. With ``inplace`` the RMS
    squares ``probs`` in place (no second H×Q×K buffer: use it when the probabilities are not needed afterwards).
    """
    if mode == "rms":
        sq = probs.square_() if inplace else probs.square()  # faster on CPU than linalg.vector_norm
        return sq.mean(dim=1).sqrt_()
    if mode == "mean":
        return probs.mean(dim=1)
    if mode == "max":
        return probs.amax(dim=1)
    raise ValueError(f"unknown head fusion {mode!r}: allowed {HEAD_FUSIONS}")


def residual_normalize(a: Tensor) -> Tensor:
    """Â = (A + I) / 2 with every row then divided by its sum, for square ``(B, n, n)`` matrices.

    Equivalent to (A + I) / (rowsum(A) + 1). Not counted as FLOPs (the paper does not count it).
    """
    n = a.shape[-1]
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    r = (a + eye) * 0.5
    return r / r.sum(dim=-1, keepdim=True)


def forward_rollout(mats: Sequence[Tensor]) -> Tensor:
    """R = Â_L ··· Â_1 · I for square ``(B, n, n)`` matrices given in increasing depth (each already residual-
    normalised). Rows of R are output tokens, columns input tokens. Counts n³ MACs per block."""
    first = mats[0]
    r = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device).expand_as(first)
    for a in mats:
        r = counting.matmul(a, r)
    return r


def backward_rollout(mats: Sequence[Tensor], s: Tensor) -> Tensor:
    """s ← Âᵀ s through the blocks in reverse depth order; ``s`` is ``(B, n)``. Equals ``s0ᵀ R`` of the forward
    form (the mean over anchor rows when ``s0`` is the normalised anchor mask) at n² MACs per block.
    """
    v = s.unsqueeze(-1)
    for a in reversed(list(mats)):
        v = counting.matmul(a.transpose(-1, -2), v)
    return v.squeeze(-1)


def sum_pool_keys(a: Tensor, grid: Tuple[int, int], pool: int = 2) -> Tensor:
    """Sum-pool ``(B, Q, h·w)`` over keys viewed as an h×w image, giving ``(B, Q, (h/p)·(w/p))``; row mass is kept."""
    b, q, _ = a.shape
    h, w = grid
    img = a.reshape(b * q, 1, h, w)
    pooled = F.avg_pool2d(img, pool, divisor_override=1)
    return pooled.reshape(b, q, -1)


def pool_queries(
    a: Tensor, grid: Tuple[int, int], kept: Tensor | None = None, pool: int = 2
) -> Tuple[Tensor, Tensor]:
    """Pool rows of ``(B, h·w, M)`` over p×p query blocks.

    Without ``kept`` this is the mean over each block (full frames). With a boolean ``kept`` ``(B, h·w)`` the rows of
    pruned queries are ignored and each block is divided by its number of kept queries (pruned frames, §2.3).
    Returns the pooled ``(B, (h/p)·(w/p), M)`` and the number of contributing queries per pooled row.
    """
    b, n, m = a.shape
    h, w = grid
    if kept is None:
        kept = torch.ones(b, n, dtype=torch.bool, device=a.device)
    weights = kept.to(a.dtype)
    rows = (a * weights.unsqueeze(-1)).transpose(1, 2).reshape(b * m, 1, h, w)
    summed = F.avg_pool2d(rows, pool, divisor_override=1).reshape(b, m, -1).transpose(1, 2)
    count = F.avg_pool2d(weights.reshape(b, 1, h, w), pool, divisor_override=1).reshape(b, -1)
    return summed / count.clamp(min=1).unsqueeze(-1), count


def anchor_mask_from_boxes(
    boxes: Tensor, grid: Tuple[int, int], stride: float, valid: Tensor | None = None
) -> Tensor:
    """Tokens covered by boxes (docs/method.md §2.3), as a boolean ``(h, w)`` mask.

    ``boxes`` is ``(M, 4)`` x0, y0, x1, y1 in padded-image pixels. Token coordinates are floor(x0/stride),
    floor(y0/stride), ceil(x1/stride), ceil(y1/stride), clipped to [0, S-1], and the end is exclusive, so (as in the
    official code) the last row and column are never anchors. ``valid`` ``(M,)`` selects boxes (score > threshold).
    Vectorised, no host synchronisation.
    """
    h, w = grid
    if boxes.numel() == 0:
        return torch.zeros(h, w, dtype=torch.bool, device=boxes.device)
    t = boxes / stride
    x0 = t[:, 0].floor().clamp(0, w - 1)
    y0 = t[:, 1].floor().clamp(0, h - 1)
    x1 = t[:, 2].ceil().clamp(0, w - 1)
    y1 = t[:, 3].ceil().clamp(0, h - 1)
    ys = torch.arange(h, device=boxes.device, dtype=t.dtype)
    xs = torch.arange(w, device=boxes.device, dtype=t.dtype)
    in_y = (ys[None, :] >= y0[:, None]) & (ys[None, :] < y1[:, None])  # (M, h)
    in_x = (xs[None, :] >= x0[:, None]) & (xs[None, :] < x1[:, None])  # (M, w)
    cover = in_y[:, :, None] & in_x[:, None, :]
    if valid is not None:
        cover = cover & valid[:, None, None]
    return cover.any(dim=0)


def pool_anchor_mask(mask: Tensor, pool: int = 2) -> Tensor:
    """Pool a boolean ``(..., h, w)`` anchor mask p×p: a pooled cell is an anchor when ≥ half its tokens are."""
    lead = mask.shape[:-2]
    h, w = mask.shape[-2:]
    m = F.avg_pool2d(mask.reshape(-1, 1, h, w).float(), pool)
    return (m >= 0.5).reshape(*lead, h // pool, w // pool)


def anchor_vector(mask: Tensor) -> Tensor:
    """Normalised anchor weights ``(B, n)`` from a boolean ``(B, n)`` mask; all tokens when a row has no anchor."""
    m = mask.to(torch.float32)
    none = m.sum(dim=-1, keepdim=True) == 0
    m = torch.where(none, torch.ones_like(m), m)
    return m / m.sum(dim=-1, keepdim=True)


def read_anchor_rows(r: Tensor, mask: Tensor) -> Tensor:
    """Mean over anchor rows of a forward rollout ``R`` ``(B, n, n)``; all rows when there is no anchor."""
    s = anchor_vector(mask).to(r.dtype)
    return (s.unsqueeze(1) @ r).squeeze(1)


def read_class_row(r: Tensor) -> Tensor:
    """Importance of the input tokens from the class row of ``R`` ``(B, 1+n, 1+n)``: ``R[:, 0, 1:]``."""
    return r[:, 0, 1:]


def upsample_heatmap(h: Tensor, grid: Tuple[int, int], pool: int = 2) -> Tensor:
    """Bilinearly upsample a pooled ``(B, (h/p)·(w/p))`` heatmap ×p (align_corners=False) to ``(B, h·w)``."""
    b = h.shape[0]
    gh, gw = grid
    img = h.reshape(b, 1, gh // pool, gw // pool)
    up = F.interpolate(img, size=(gh, gw), mode="bilinear", align_corners=False)
    return up.reshape(b, gh * gw)


def normalize(h: Tensor) -> Tensor:
    """Divide each row of ``(B, n)`` by its sum."""
    return h / h.sum(dim=-1, keepdim=True)


def refresh_attention(
    fresh: Tensor,
    grid: Tuple[int, int],
    pool: int = 1,
    kept: Tensor | None = None,
    previous: Tensor | None = None,
) -> Tensor:
    """One rollout block's attention buffer after a frame (docs/method.md §2.3).

    ``fresh`` ``(B, rows, N)`` is this frame's head-fused attention over all N keys: of every query on a full frame
    (``kept`` None), of the kept queries ``kept`` ``(B, K)`` on a pruned frame, where ``previous`` is the buffer
    before the frame. Returns ``(B, N, N)``, or ``(B, N/p², N/p²)`` pooled (keys summed, queries averaged p×p).

    On a pruned frame only the rows of kept queries are fresh: they replace their rows of ``previous``, and every
    other row keeps the value it had, i.e. the attention of that query on the last frame it was computed. Pooled,
    a pooled row is the mean over the kept queries of its p×p block, and it is replaced only when the block holds
    at least one kept query.
    """
    if pool > 1:
        fresh = sum_pool_keys(fresh, grid, pool)
    if kept is None:
        return pool_queries(fresh, grid, None, pool)[0] if pool > 1 else fresh
    if previous is None:
        raise ValueError("a pruned frame's attention refresh needs the previous buffer")
    b, _, m = fresh.shape
    idx = kept.unsqueeze(-1).expand(-1, -1, m)
    if pool == 1:
        return previous.clone().scatter_(1, idx, fresh)
    n = grid[0] * grid[1]
    scattered = fresh.new_zeros(b, n, m).scatter_(1, idx, fresh)
    km = torch.zeros(b, n, dtype=torch.bool, device=fresh.device).scatter_(1, kept, True)
    pooled, count = pool_queries(scattered, grid, km, pool)
    return torch.where((count > 0).unsqueeze(-1), pooled, previous)


def rollout_heatmap(
    buffers: Sequence[Tensor],
    anchors: Tensor,
    grid: Tuple[int, int],
    pool: int = 1,
    mode: str = "forward",
    kept: Tensor | None = None,
    previous: Tensor | None = None,
) -> Tensor:
    """The heatmap ``(B, N)`` (rows sum to 1) of a frame from its rollout blocks' attention buffers (in increasing
    depth, as :func:`refresh_attention` leaves them) and its anchor masks ``(B, h, w)`` (docs/method.md §2.2–§2.3).

    Each buffer is residual-normalised; ``forward`` multiplies them and reads the mean of the anchor rows,
    ``backward`` propagates the anchor vector through them (mat-vec). Pooled buffers are read at pooled anchors
    (a pooled cell is an anchor when at least half its tokens are) and the result upsampled bilinearly. All tokens
    are anchors where a mask is empty. On a pruned frame of the backward form (``kept`` and ``previous``, the last
    heatmap, given), positions of tokens not kept keep their previous value.
    """
    mats = [residual_normalize(buf) for buf in buffers]
    b = anchors.shape[0]
    anchors = anchors.reshape(b, grid[0], grid[1])
    if pool > 1:
        anchors = pool_anchor_mask(anchors, pool)
    anchors = anchors.reshape(b, -1)
    if mode == "backward":
        imp = backward_rollout(mats, anchor_vector(anchors).to(mats[0].dtype))
    elif mode == "forward":
        imp = read_anchor_rows(forward_rollout(mats), anchors)
    else:
        raise ValueError(f"unknown rollout mode {mode!r}: allowed ('forward', 'backward')")
    if pool > 1:
        imp = upsample_heatmap(imp, grid, pool)
    if mode == "backward" and kept is not None:
        if previous is None:
            raise ValueError("the backward rollout of a pruned frame needs the previous heatmap")
        km = torch.zeros_like(previous, dtype=torch.bool).scatter_(1, kept, True)
        imp = torch.where(km, imp, previous)
    return normalize(imp)


def update_streams(
    states: Sequence["StreamState"],
    anchor_masks: Tensor,
    blocks: Sequence[int],
    cfg: "RGTPConfig",
) -> Tensor:
    """The rollout step of a batch of streams after a frame: refresh each stream's attention buffers of the rollout
    ``blocks`` from the frame's attention (``state.pending``) and store its new heatmap; returns ``(B, N)``.

    Streams on full frames and streams on pruned frames (grouped by their number of kept tokens) are computed
    as separate batches (:func:`refresh_attention`, :func:`rollout_heatmap`).
    """
    groups: dict = {}
    for i, s in enumerate(states):
        if s.grid is None or not s.pending:
            raise RuntimeError(
                "the rollout update ran before forward() processed this stream's frame"
            )
        groups.setdefault(None if s.kept is None else s.kept.numel(), []).append(i)
    result: list = [None] * len(states)
    pool = cfg.rollout_pool
    for k, idx in groups.items():
        group = [states[i] for i in idx]
        grid = group[0].grid
        if pool > 1 and (grid[0] % pool or grid[1] % pool):
            raise ConfigError(
                f"invalid RGTP setting rollout_pool={pool}: the token grid {grid} is not divisible by it"
            )
        kept = None if k is None else stack_rows([s.kept for s in group])
        buffers = []
        for bi in blocks:
            fresh = stack_rows([s.pending[bi] for s in group])
            previous = None if kept is None else stack_rows([s.attn[bi] for s in group])
            buffers.append(refresh_attention(fresh, grid, pool, kept, previous))
        last = None if kept is None else stack_rows([s.heatmap for s in group])
        heat = rollout_heatmap(buffers, anchor_masks[idx], grid, pool, cfg.rollout_mode, kept, last)
        for j, (i, s) in enumerate(zip(idx, group)):
            s.attn = {bi: buf[j] for bi, buf in zip(blocks, buffers)}
            s.heatmap = heat[j]
            s.pending = {}
            result[i] = heat[j]
    return torch.stack(result)
