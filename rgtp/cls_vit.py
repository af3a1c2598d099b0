"""Spatial ViT with a class token and RGTP pruning: the spatial model of the factorised-encoder ViViT.

Implements method.md §1b, §2.4, §4.2 and §4.4 in pure PyTorch:

* the model sees one tubelet step at a time (``(B, N, C)`` raw tubelet embeddings, B = batched views) and returns
  the class-token feature after the final LayerNorm;
* a per-batch :class:`ClsViTState` carries the step index, the previous heatmap and the previous raw embeddings
  across the tubelet steps of one batch of views (call :meth:`ClsViTState.reset` for every new batch);
* pruning happens once, in block 0, after attention + projection + residual and before the MLP; pruned tokens are
  dropped (blocks 1.. run on the class token plus the K kept tokens);
* the kept set is the full grid on the first step, a fixed grid pattern (:func:`rgtp.selection.grid_pattern`) on
  reset steps, and top-K foreground (optionally strided) plus raster-strided background
  (:func:`rgtp.selection.select_tokens`) of the tracked previous heatmap (:func:`rgtp.tracking.warp_heatmap`)
  otherwise;
* the heatmap is the class row of the attention rollout over all blocks (RMS head fusion, residual, row
  normalisation); after block 0 the rollout is restricted to the kept tokens on both axes, and pruned positions copy
  the value of their nearest kept token by block-0 key similarity (:func:`nearest_kept_tokens`).

Every FLOP-relevant operation goes through :mod:`rgtp.counting`, so a :class:`rgtp.counting.FlopCounter` around the
forward reproduces the paper's per-frame numbers (method.md §5.3); the model also runs on the ``meta`` device.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import counting, rollout
from .config import RGTPConfig
from .selection import (
    FrameType,
    frame_type,
    grid_pattern,
    is_full_frame,
    kept_mask,
    num_selected,
    random_tokens,
    select_tokens,
)
from .tracking import warp_heatmap

__all__ = ["ClsViT", "ClsViTState", "Block", "Attention", "Mlp", "nearest_kept_tokens"]


class ClsViTState:
    """What one batch of views carries from tubelet step to tubelet step (method.md §1b).

    All rows of a batch advance together (the views of a video are processed in lock-step), so one state object
    serves the whole batch. Attributes after each forward: ``t`` (the step just processed), ``frame_type``, ``kept``
    (``(B, K)`` raster-sorted kept patch indices, or None on a full step), ``heatmap`` (``(B, N)``, sums to 1),
    ``prev_emb`` (``(B, N, C)`` raw embeddings), and ``kept_counts`` (kept patch tokens per step so far).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new batch of videos: t = -1, heatmap, embeddings and history cleared."""
        self.t: int = -1
        self.frame_type: Optional[FrameType] = None
        self.heatmap: Optional[Tensor] = None
        self.prev_emb: Optional[Tensor] = None
        self.kept: Optional[Tensor] = None
        self.kept_counts: List[int] = []
        self.generator: Optional[torch.Generator] = None


class Mlp(nn.Module):
    """Two-layer GELU MLP (``fc1``, ``fc2``) with counted linears."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """fc2(GELU(fc1(x)))."""
        return counting.linear(F.gelu(counting.linear(x, self.fc1)), self.fc2)


class Attention(nn.Module):
    """Multi-head self-attention (``qkv``, ``proj``) that can return its probabilities and keys."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, need_probs: bool = False
    ) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """Attention output ``(B, n, C)`` (after ``proj``), probabilities ``(B, H, n, n)`` or None, keys
        ``(B, H, n, d)``. QKᵀ and AV are counted as 2·B·H·n²·d matmul MACs either way."""
        b, n, c = x.shape
        qkv = counting.linear(x, self.qkv).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        probs: Optional[Tensor] = None
        if need_probs:
            probs = counting.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
            out = counting.matmul(probs, v)
        else:
            counting.charge("matmul", 2 * b * self.num_heads * n * n * self.head_dim)
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, c)
        return counting.linear(out, self.proj), probs, k


class Block(nn.Module):
    """Pre-LN transformer block (``norm1``, ``attn``, ``norm2``, ``mlp``), split into its attention half and its
    MLP half so that tokens can be dropped between them (method.md §4.1)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def attend(
        self, x: Tensor, need_probs: bool = False
    ) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """x + proj(attention(norm1(x))), with the probabilities (if asked) and the keys."""
        y, probs, keys = self.attn(self.norm1(x), need_probs)
        return counting.add(x, y), probs, keys

    def feed_forward(self, x: Tensor) -> Tensor:
        """x + mlp(norm2(x))."""
        return counting.add(x, self.mlp(self.norm2(x)))

    def forward(self, x: Tensor) -> Tensor:
        """The dense block."""
        return self.feed_forward(self.attend(x)[0])


def nearest_kept_tokens(keys: Tensor, kept: Tensor) -> Tensor:
    """For every patch position, the kept position it copies its heatmap value from (method.md §2.4).

    ``keys`` are the block-0 keys of the patch tokens ``(B, H, N, d)`` (class token excluded); ``kept`` is
    ``(B, K)``. The descriptor is the key averaged over heads; each pruned position is matched to the kept position
    with the largest unnormalised dot product (ties to the lowest raster index among the kept). Kept positions map
    to themselves. Returns ``(B, N)`` long. Counts (N−K)·K·d matmul MACs per row. No host synchronisation.
    """
    desc = keys.mean(dim=1)  # (B, N, d)
    b, n, d = desc.shape
    k = kept.shape[1]
    src = torch.arange(n, device=desc.device).expand(b, n).clone()
    if k >= n:
        return src
    mask = kept_mask(kept, n)
    pruned = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices[:, : n - k]
    kd = desc.gather(1, kept.unsqueeze(-1).expand(-1, -1, d))
    pd = desc.gather(1, pruned.unsqueeze(-1).expand(-1, -1, d))
    sim = counting.matmul(pd, kd.transpose(1, 2))  # (B, N-K, K)
    best = kept.gather(1, sim.argmax(dim=-1))
    return src.scatter(1, pruned, best)


def _gather_rows_cols(r: Tensor, idx: Tensor) -> Tensor:
    """``r[b][idx[b]][:, idx[b]]`` for a batch of square matrices ``(B, n, n)`` and indices ``(B, m)``."""
    m = idx.shape[1]
    rows = r.gather(1, idx.unsqueeze(-1).expand(-1, -1, r.shape[-1]))
    return rows.gather(2, idx.unsqueeze(1).expand(-1, m, -1))


class ClsViT(nn.Module):
    """A ViT over a token grid with a learned class token, absolute position embedding and optional RGTP pruning.

    Parameters: ``cls_token`` (1, 1, C), ``pos_embed`` (1, 1+N, C), ``blocks.{i}.{norm1, attn.qkv, attn.proj,
    norm2, mlp.fc1, mlp.fc2}``, ``norm``. The same class serves as the ViViT temporal transformer (grid (T, 1), no
    RGTP).

    Args:
        grid: (h, w) of the token grid; N = h·w.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias, eps: the transformer shape (ViT-B: 768, 12, 12, 4).
        rgtp: pruning settings; None (or ``enabled=False``) gives the dense model. For ViViT use
            ``full_on_reset=False`` with a ``reset_pattern`` (method.md §1b).
    """

    def __init__(
        self,
        grid: Tuple[int, int],
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        rgtp: Optional[RGTPConfig] = None,
    ) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_tokens = self.grid[0] * self.grid[1]
        self.embed_dim = embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_tokens, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.rgtp = rgtp
        if rgtp is not None:
            rgtp.validate(self.num_tokens)
            blocks = rgtp.rollout_blocks
            if blocks is not None:
                bad = [i for i in blocks if not 0 <= int(i) < depth]
                if bad or len(blocks) == 0:
                    raise ValueError(
                        f"invalid RGTP setting rollout_blocks={list(blocks)!r}: allowed a non-empty list of "
                        f"block indices in [0, {depth})"
                    )
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def pruning(self) -> bool:
        """Whether RGTP pruning is configured and enabled."""
        return self.rgtp is not None and self.rgtp.enabled

    def new_state(self) -> ClsViTState:
        """A fresh per-batch state."""
        return ClsViTState()

    def num_kept(self, ftype: FrameType) -> int:
        """Kept patch tokens on a step of this type (N on full steps); static per config (method.md §3.4)."""
        cfg = self.rgtp
        n = self.num_tokens
        if cfg is None or not cfg.enabled:
            return n
        if ftype == FrameType.FIRST and cfg.first_frame_full:
            return n
        if ftype == FrameType.PRUNED:
            return num_selected(n, cfg.num_keep(n), cfg.fg_sample_ratio, cfg.bg_sample_ratio)
        if cfg.full_on_reset or cfg.reset_pattern is None:
            return n
        return int(grid_pattern(cfg.reset_pattern, self.grid).numel())

    # ------------------------------------------------------------------------------------------------------------
    def _choose(self, emb: Tensor, state: ClsViTState, ftype: FrameType) -> Optional[Tensor]:
        """Kept patch indices ``(B, K)`` raster-sorted for this step, or None when the step is processed fully."""
        cfg = self.rgtp
        assert cfg is not None
        b, n, _ = emb.shape
        if is_full_frame(ftype, cfg):
            return None
        if ftype != FrameType.PRUNED or state.heatmap is None:
            # reset steps (and a non-full first step) use the fixed grid pattern
            if cfg.full_on_reset or cfg.reset_pattern is None:
                return None
            pattern = grid_pattern(cfg.reset_pattern, self.grid).to(emb.device)
            return pattern.unsqueeze(0).expand(b, -1)
        k_fg = cfg.num_keep(n)
        if cfg.selection == "random":
            if state.generator is None:
                state.generator = torch.Generator().manual_seed(cfg.seed)
            k = num_selected(n, k_fg, cfg.fg_sample_ratio, cfg.bg_sample_ratio)
            return random_tokens(b, n, k, state.generator, device=emb.device)
        scores = state.heatmap
        if cfg.tracking_radius > 0 and state.prev_emb is not None:
            scores = warp_heatmap(scores, emb, state.prev_emb, self.grid, cfg.tracking_radius)
        return select_tokens(scores, k_fg, cfg.fg_sample_ratio, cfg.bg_sample_ratio)

    def forward(self, emb: Tensor, state: Optional[ClsViTState] = None) -> Tensor:
        """Class-token feature ``(B, C)`` after the final LayerNorm for one step of raw embeddings ``(B, N, C)``.

        Without a state (or without enabled RGTP) the model is dense and touches no state. With a state, the step
        index advances by one, the step is processed as first / reset / pruned, and the state receives the new
        heatmap (for the next step) and the raw embeddings.
        """
        b, n, c = emb.shape
        if n != self.num_tokens or c != self.embed_dim:
            raise ValueError(
                f"ClsViT expects (B, {self.num_tokens}, {self.embed_dim}) embeddings for grid {self.grid}, "
                f"got {tuple(emb.shape)}"
            )
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(emb.dtype), emb], dim=1)
        x = counting.add(x, self.pos_embed.to(emb.dtype))
        if state is None or not self.pruning:
            for blk in self.blocks:
                x = blk(x)
            return self.norm(x[:, 0])
        return self._forward_pruned(x, emb, state)

    def _forward_pruned(self, x: Tensor, emb: Tensor, state: ClsViTState) -> Tensor:
        cfg = self.rgtp
        assert cfg is not None
        b, n, c = emb.shape
        state.t += 1
        ftype = frame_type(state.t, cfg.reset_period)
        kept = self._choose(emb, state, ftype)
        used: Sequence[int] = (
            range(len(self.blocks))
            if cfg.rollout_blocks is None
            else [int(i) for i in cfg.rollout_blocks]
        )

        # block 0: full attention, then prune, then the MLP on the kept tokens (method.md §4.1)
        blk0 = self.blocks[0]
        x, probs, keys = blk0.attend(x, need_probs=0 in used)
        r: Optional[Tensor] = None
        if probs is not None:
            r = rollout.forward_rollout(
                [rollout.residual_normalize(rollout.fuse_heads(probs, cfg.head_fusion))]
            )
        if kept is not None:
            idx = torch.cat([kept.new_zeros(b, 1), kept + 1], dim=1)  # class token first
            x = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, c))
            if r is not None:
                r = _gather_rows_cols(r, idx)
        x = blk0.feed_forward(x)

        # blocks 1..: on the class token + kept tokens; rollout restricted to them (method.md §2.4)
        for i, blk in enumerate(self.blocks):
            if i == 0:
                continue
            need = i in used
            x, probs, _ = blk.attend(x, need_probs=need)
            if probs is not None:
                a = rollout.residual_normalize(rollout.fuse_heads(probs, cfg.head_fusion))
                r = rollout.forward_rollout([a]) if r is None else counting.matmul(a, r)
            x = blk.feed_forward(x)
        out = self.norm(x[:, 0])

        assert r is not None
        imp = rollout.read_class_row(r)
        if kept is None:
            heat = imp
        else:
            heat = torch.zeros(b, n, dtype=imp.dtype, device=imp.device).scatter(1, kept, imp)
            heat = heat.gather(1, nearest_kept_tokens(keys[:, :, 1:], kept))
        state.heatmap = rollout.normalize(heat)
        state.prev_emb = emb.detach()
        state.kept = kept
        state.frame_type = ftype
        state.kept_counts.append(n if kept is None else int(kept.shape[1]))
        return out
