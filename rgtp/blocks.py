"""The transformer blocks of both models, with a dense ``forward`` and the pruned paths RGTP needs.

Parameter names are detectron2's ViTDet / timm's (``norm1``, ``attn.qkv``, ``attn.proj``, ``attn.rel_pos_h``,
``attn.rel_pos_w``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), so checkpoints load unchanged.

A :class:`Block` runs in one of three ways (docs/method.md §4):

* ``forward(x, grid)``: the dense block over every token, windowed (``window_size`` > 0) or global;
* ``forward(x, grid, keep=kept)``: the pruning step of block 0: attention over every token, then only the kept rows
  go on to the projection, residual and MLP;
* ``forward_cached(x, kept, cache, grid)``: a block after the pruning step: LN and QKV on the kept rows only, written
  into the block's QKV cache, and kept queries attending to every key and value of the cache (pruned tokens'
  entries are those of the last frame on which they were computed). Windowed blocks compute the kept queries only,
  each against its own window (``kept_windows``), or every window from the cache and then keep the kept rows.

Every call returns a :class:`BlockOutput` with the head-fused attention when ``fusion`` names a head fusion (for the
rollout) and the QKV rows the block computed (the caches of full frames, and ViViT's key matching).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from . import counting, windows
from .attention import AttentionKernel, Memo, RelPos, gather_rows, split_heads, version
from .posenc import relative_matrix
from .rollout import fuse_heads


class Mlp(nn.Module):
    """fc1 → GELU → fc2, counted."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """fc2(GELU(fc1(x)))."""
        return counting.linear(self.act(counting.linear(x, self.fc1)), self.fc2)


class Attention(nn.Module):
    """The parameters of one attention layer: ``qkv``, ``proj`` and, with ``use_rel_pos``, the decomposed
    relative-position tables ``rel_pos_h``/``rel_pos_w`` of length 2·``rel_size``−1, resized to other key grids
    per ``rel_pos_interp`` (``paper`` or ``detectron2``, see :func:`rgtp.posenc.relative_matrix`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_size: int = 0,
        rel_pos_interp: str = "paper",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        self.rel_pos_interp = rel_pos_interp
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_size - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_size - 1, self.head_dim))
        self.memo = Memo()

    def rel_pos(
        self,
        key_grid: Tuple[int, int],
        rows: Optional[Tensor] = None,
        cols: Optional[Tensor] = None,
    ) -> Optional[RelPos]:
        """The relative position of queries at ``rows``/``cols`` (None: the whole grid) for a ``key_grid``, or
        None without relative position."""
        if not self.use_rel_pos:
            return None
        mode = self.rel_pos_interp
        th, tw = self.rel_pos_h, self.rel_pos_w
        key = (key_grid, mode, version(th), version(tw), th.device, th.dtype)
        table_h = self.memo.get(("h",) + key, lambda: relative_matrix(th, key_grid[0], mode))
        table_w = self.memo.get(("w",) + key, lambda: relative_matrix(tw, key_grid[1], mode))
        return RelPos(table_h, table_w, rows, cols)


class BlockOutput(NamedTuple):
    """What a block returns: the output rows ``x`` (B, rows, C), the head-fused attention ``attn`` (B, rows, N)
    over the tokens when asked (else None), and the ``qkv`` (B, n, 3C) it computed (every token, or the kept).
    """

    x: Tensor
    attn: Optional[Tensor]
    qkv: Tensor


class Block(nn.Module):
    """A pre-LN transformer block, windowed (``window_size`` > 0) or global (see the module docstring)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        window_size: int = 0,
        rel_size: int = 0,
        eps: float = 1e-6,
        rel_pos_interp: str = "paper",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(
            dim, num_heads, qkv_bias, use_rel_pos, window_size or rel_size, rel_pos_interp
        )
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(
        self,
        x: Tensor,
        grid: Optional[Tuple[int, int]] = None,
        *,
        keep: Optional[Tensor] = None,
        project_pruned: bool = False,
        fusion: Optional[str] = None,
        kernel: Optional[AttentionKernel] = None,
    ) -> BlockOutput:
        """The block over every row of ``x`` (B, N, C) on ``grid`` (None: no grid, plain global attention, e.g.
        with a class token). With ``keep`` (B, K) row indices, only those rows continue after the attention (the
        pruning step); the pruned rows' projection and residual are skipped and charged to the paper tally only,
        or computed (``project_pruned``, as ViViT's official model does). ``fusion`` (``rms``, ``mean``, ``max``)
        asks for the head-fused attention (of every query: also the pruned ones)."""
        kernel = kernel or _DEFAULT_KERNEL
        qkv = counting.linear(self.norm1(x), self.attn.qkv)
        if self.window_size:
            out, attn = self._windows(qkv, grid, fusion, kernel)
        else:
            out, attn = self._global(qkv, grid, None, fusion, kernel)
        if keep is not None:
            if project_pruned:
                x = gather_rows(counting.add(x, counting.linear(out, self.attn.proj)), keep)
                return BlockOutput(self._feed_forward(x), attn, qkv)
            pruned = x.shape[1] - keep.shape[1]
            proj = self.attn.proj
            counting.charge_paper_only("linear", pruned * proj.in_features * proj.out_features)
            counting.charge_paper_only("bias", pruned * proj.out_features)
            counting.charge_paper_only("add", pruned * x.shape[-1])
            out, x = gather_rows(out, keep), gather_rows(x, keep)
        x = counting.add(x, counting.linear(out, self.attn.proj))
        return BlockOutput(self._feed_forward(x), attn, qkv)

    def forward_cached(
        self,
        x: Tensor,
        kept: Tensor,
        cache: Tensor,
        grid: Tuple[int, int],
        *,
        fusion: Optional[str] = None,
        kernel: Optional[AttentionKernel] = None,
        kept_windows: bool = True,
    ) -> BlockOutput:
        """The block on the kept rows ``x`` (B, K, C) at grid positions ``kept`` (B, K), against the QKV cache
        ``cache`` (B, N, 3C), into which the kept rows' fresh QKV are written (in place). Windowed blocks run the
        kept queries only when ``kept_windows`` (and K < N and no attention is asked for: the rollout needs the
        whole windows), else every window from the cache."""
        kernel = kernel or _DEFAULT_KERNEL
        qkv = counting.linear(self.norm1(x), self.attn.qkv)
        cache.scatter_(1, kept.unsqueeze(-1).expand(-1, -1, cache.shape[-1]), qkv)
        if not self.window_size:
            out, attn = self._global(cache, grid, kept, fusion, kernel)
        elif kept_windows and fusion is None and kept.shape[1] < cache.shape[1]:
            out, attn = self._kept_windows(cache, qkv, grid, kept, kernel), None
        else:
            out, attn = self._windows(cache, grid, fusion, kernel)
            out = gather_rows(out, kept)
            attn = gather_rows(attn, kept) if attn is not None else None
        x = counting.add(x, counting.linear(out, self.attn.proj))
        return BlockOutput(self._feed_forward(x), attn, qkv)

    # ------------------------------------------------------------------------------------------------ pieces
    def _feed_forward(self, x: Tensor) -> Tensor:
        return counting.add(x, self.mlp(self.norm2(x)))

    def _global(
        self,
        qkv: Tensor,
        grid: Optional[Tuple[int, int]],
        kept: Optional[Tensor],
        fusion: Optional[str],
        kernel: AttentionKernel,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Every query (or the ``kept`` ones) against every key of ``qkv`` (B, N, 3C)."""
        a = self.attn
        n, c = qkv.shape[1], qkv.shape[-1] // 3
        q, k, v = qkv.split(c, dim=-1)
        if kept is not None:
            q = gather_rows(q, kept)
        q, k, v = (split_heads(t, a.num_heads) for t in (q, k, v))
        rel = None
        if a.use_rel_pos:
            assert grid is not None, "relative position needs the token grid"
            rows = cols = None
            if kept is not None:
                rows, cols = kept // grid[1], kept % grid[1]
                # the official code applies the bias at full N×N, queries zero-padded
                missing = q.shape[0] * a.num_heads * (n - q.shape[2])
                counting.charge_paper_only("einsum", missing * sum(grid) * a.head_dim)
                counting.charge_paper_only("add", 2 * missing * n)
            rel = a.rel_pos(grid, rows, cols)
        out, probs = kernel(q, k, v, a.scale, rel, need_probs=fusion is not None)
        # out = probs @ v is computed already: fuse in place
        return out, fuse_heads(probs, fusion, inplace=True) if probs is not None else None

    def _windows(
        self, qkv: Tensor, grid: Tuple[int, int], fusion: Optional[str], kernel: AttentionKernel
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Every query of every window of ``qkv`` (B, N, 3C); padded slots have the qkv bias as QKV (padded tokens
        are zeros after norm1)."""
        a, ws, b = self.attn, self.window_size, qkv.shape[0]
        c = qkv.shape[-1] // 3
        fill = a.qkv.bias if a.qkv.bias is not None else qkv.new_zeros(3 * c)
        win = windows.partition(qkv, grid, ws, fill)
        q, k, v = (split_heads(t, a.num_heads) for t in win.split(c, dim=-1))
        out, probs = kernel(q, k, v, a.scale, a.rel_pos((ws, ws)), need_probs=fusion is not None)
        out = windows.unpartition(out, b, grid, ws)
        if probs is None:
            return out, None
        return out, windows.probs_to_full(fuse_heads(probs, fusion), b, grid, ws)

    def _kept_windows(
        self,
        cache: Tensor,
        kept_qkv: Tensor,
        grid: Tuple[int, int],
        kept: Tensor,
        kernel: AttentionKernel,
    ) -> Tensor:
        """The kept queries only, each against the ws² cached keys/values of its own window (B, K, C).

        Queries are grouped by window (:func:`rgtp.windows.group_kept`) and padded to the largest group; only
        occupied windows are computed, as one batch. The useful work is charged (padding slots are computed, not
        charged); the paper tally also gets the (padded-grid) queries the official code runs. On ``meta`` (no data
        to group) the same FLOPs are charged and an empty result returned.
        """
        a, ws = self.attn, self.window_size
        nh, d = a.num_heads, a.head_dim
        b, n, c3 = cache.shape
        c = c3 // 3
        nk = kept.shape[1]
        hp, wp = windows.padded_grid(grid, ws)
        nwin = (hp // ws) * (wp // ws)
        missing = b * (hp * wp - nk)
        counting.charge_paper_only("matmul", 2 * missing * nh * ws * ws * d)
        if a.use_rel_pos:
            counting.charge_paper_only("einsum", missing * nh * 2 * ws * d)
            counting.charge_paper_only("add", 2 * missing * nh * ws * ws)
        if cache.device.type == "meta":
            slots = min(nk, ws * ws)
            q = cache.new_empty(b * nwin, nh, slots, d)
            kv = cache.new_empty(b * nwin, nh, ws * ws, d)
            pos = torch.zeros(b * nwin, slots, dtype=torch.long, device=cache.device)
            rel = a.rel_pos((ws, ws), pos, pos)
            kernel(q, kv, kv, a.scale, rel, counted_queries=b * nk, reuse_buffer=False)
            return cache.new_empty(b, nk, c)
        g = windows.group_kept(kept, grid, ws)
        nact = g.active.numel()
        q = cache.new_zeros(nact * g.slots, c).index_copy_(
            0, g.dest, kept_qkv[..., :c].reshape(-1, c)
        )
        q = q.view(nact, g.slots, nh, d).transpose(1, 2)
        tok = a.memo.get(
            ("window_tokens", grid, ws, cache.device),
            lambda: windows.window_tokens(grid, ws, cache.device),
        )[g.active % nwin]
        rows = (g.active // nwin).unsqueeze(1) * n + tok.clamp(min=0)
        kv = cache.reshape(b * n, c3)[:, c:].index_select(0, rows.reshape(-1))  # (nact·ws², 2C)
        if (hp, wp) != tuple(grid):  # padded slots: the qkv bias
            bias = a.qkv.bias
            fill = bias[c:].to(kv.dtype) if bias is not None else kv.new_zeros(2 * c)
            kv = torch.where((tok < 0).reshape(-1, 1), fill, kv)
        k, v = kv.view(nact, ws * ws, 2, nh, d).permute(2, 0, 3, 1, 4).unbind(0)
        rel = a.rel_pos((ws, ws), g.rows.view(nact, g.slots), g.cols.view(nact, g.slots))
        out, _ = kernel(q, k, v, a.scale, rel, counted_queries=b * nk, reuse_buffer=False)
        return out.reshape(nact * g.slots, c).index_select(0, g.dest).view(b, nk, c)


#: for blocks called on their own: stateless (no shared buffers)
_DEFAULT_KERNEL = AttentionKernel("sdpa", reuse_buffers=False)
