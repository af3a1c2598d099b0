"""Non-overlapping ws×ws windows over a token grid: partition with bottom/right padding, the way back, the token of
every window slot, and the grouping of kept queries by window that pruned frames use.

Grids are ``(h, w)`` in raster order; windows are numbered in raster order over the padded ``(hp, wp)`` grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor


def padded_grid(grid: Tuple[int, int], ws: int) -> Tuple[int, int]:
    """The grid padded bottom/right to multiples of ``ws``."""
    h, w = grid
    return h + (-h) % ws, w + (-w) % ws


def partition(x: Tensor, grid: Tuple[int, int], ws: int, fill: Tensor) -> Tensor:
    """(B, N, C) rows over ``grid`` → (B·nw, ws², C) windows; padded slots take ``fill`` (C,)."""
    b, n, c = x.shape
    h, w = grid
    hp, wp = padded_grid(grid, ws)
    x = x.reshape(b, h, w, c)
    if wp != w:
        x = torch.cat([x, fill.expand(b, h, wp - w, c)], dim=2)
    if hp != h:
        x = torch.cat([x, fill.expand(b, hp - h, wp, c)], dim=1)
    nwin = (hp // ws) * (wp // ws)
    return (
        x.reshape(b, hp // ws, ws, wp // ws, ws, c)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(b * nwin, ws * ws, c)
    )


def unpartition(win: Tensor, batch: int, grid: Tuple[int, int], ws: int) -> Tensor:
    """(B·nw, ws², C) windows → (B, N, C) rows over ``grid`` (padded slots dropped)."""
    h, w = grid
    hp, wp = padded_grid(grid, ws)
    c = win.shape[-1]
    out = (
        win.reshape(batch, hp // ws, wp // ws, ws, ws, c)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(batch, hp, wp, c)
    )
    return out[:, :h, :w].reshape(batch, h * w, c)


def window_tokens(grid: Tuple[int, int], ws: int, device: torch.device) -> Tensor:
    """Token of every slot of every window: (nw, ws²) raster indices into the h×w grid, −1 for padded slots."""
    h, w = grid
    hp, wp = padded_grid(grid, ws)
    y = torch.arange(hp, device=device)[:, None]
    x = torch.arange(wp, device=device)[None, :]
    tok = torch.where((y < h) & (x < w), y * w + x, torch.full_like(y * x, -1))
    return tok.reshape(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)


def probs_to_full(fused: Tensor, batch: int, grid: Tuple[int, int], ws: int) -> Tensor:
    """Scatter per-window attention (B·nw, ws², ws²) into a dense (B, N, N) matrix over the real tokens (zero
    between windows); needed only when a windowed block is put into the rollout."""
    n = grid[0] * grid[1]
    tok = window_tokens(grid, ws, fused.device)
    tok = torch.where(
        tok < 0, torch.full_like(tok, n), tok
    )  # padded slots → a dropped extra row/column
    nwin = tok.shape[0]
    full = fused.new_zeros(batch, n + 1, n + 1)
    rows = tok[:, :, None].expand(nwin, ws * ws, ws * ws)
    cols = tok[:, None, :].expand(nwin, ws * ws, ws * ws)
    full[:, rows, cols] = fused.reshape(batch, nwin, ws * ws, ws * ws)
    return full[:, :n, :n]


@dataclass
class KeptWindows:
    """Kept queries grouped by window (:func:`group_kept`).

    Attributes:
        active: (nact,) global ids (b·nw + window) of the windows holding a kept query, ascending.
        slots: per window the number of query slots (the largest count of kept queries in one window).
        dest: (B·K,) slot of every kept query, in (b, k) order: (index of its window in ``active``)·slots + rank.
        rows, cols: (nact·slots,) position of each slot's query inside its window (0 for empty slots).
    """

    active: Tensor
    slots: int
    dest: Tensor
    rows: Tensor
    cols: Tensor


def group_kept(kept: Tensor, grid: Tuple[int, int], ws: int) -> KeptWindows:
    """Group kept queries ``kept`` (B, K) by window: stable sort by window id, rank within the window.

    Reads one count on the host (the largest group and the occupied windows): fine on CPU and in eager GPU mode,
    a device synchronisation and graph break on CUDA graphs / ``torch.compile``.
    """
    b, nk = kept.shape
    dev = kept.device
    h, w = grid
    hp, wp = padded_grid(grid, ws)
    nww = wp // ws
    nwin = (hp // ws) * nww
    ky, kx = kept // w, kept % w
    batch = torch.arange(b, device=dev).unsqueeze(1)
    wid = (batch * nwin + (ky // ws) * nww + kx // ws).reshape(-1)  # (B·K,) global window id
    sorted_wid, order = torch.sort(wid, stable=True)
    counts = torch.bincount(wid, minlength=b * nwin)
    counts_host = counts.cpu()  # the one host sync
    slots = int(counts_host.max())
    active = torch.nonzero(counts_host).squeeze(1).to(dev)
    new_win = torch.ones_like(sorted_wid)
    new_win[1:] = sorted_wid[1:] != sorted_wid[:-1]
    win_slot = torch.cumsum(new_win, 0) - 1
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(b * nk, device=dev) - starts[sorted_wid]
    dest = torch.empty_like(order)
    dest[order] = win_slot * slots + rank
    rows = torch.zeros(active.numel() * slots, dtype=torch.long, device=dev)
    cols = torch.zeros_like(rows)
    rows[dest] = (ky % ws).reshape(-1)
    cols[dest] = (kx % ws).reshape(-1)
    return KeptWindows(active, slots, dest, rows, cols)
