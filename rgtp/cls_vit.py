"""Spatial ViT with a class token and RGTP pruning: the spatial model of the factorised-encoder ViViT.

Implements docs/method.md §1b, §2.4, §4.2 and §4.4 in pure PyTorch:

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
forward reproduces the paper's per-frame numbers (docs/method.md §5.3); the model also runs on the ``meta`` device.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import counting, rollout
from .attention import AttentionKernel, split_heads
from .blocks import Block
from .config import ConfigError, RGTPConfig
from .selection import (
    FrameType,
    change_scores,
    frame_type,
    grid_pattern,
    is_full_frame,
    kept_count,
    kept_mask,
    num_selected,
    random_tokens,
    select_tokens,
)
from .tracking import match_previous, match_quality, warp_heatmap

__all__ = ["ClsViT", "ClsViTState", "nearest_kept_tokens"]


class ClsViTState:
    """What one batch of views carries from tubelet step to tubelet step (docs/method.md §1b).

    All rows of a batch advance together (the views of a video are processed in lock-step), so one state object
    serves the whole batch. Attributes after each forward: ``t`` (the step just processed), ``frame_type``, ``kept``
    (``(B, K)`` raster-sorted kept patch indices, or None on a full step), ``heatmap`` (``(B, N)``, sums to 1),
    ``prev_emb`` (``(B, N, C)`` raw embeddings), ``kept_counts`` (kept patch tokens per step so far),
    ``reset_cause`` (``period`` or ``cut`` on reset steps, else None), ``match_quality`` (per row, when the cut check
    ran) and ``computed_emb`` (each token's embedding on the step it was last kept; the ``change`` selection).
    A cut in any row resets the whole batch (the rows of a batch are the views of one video).
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
        self.reset_cause: Optional[str] = None
        self.match_quality: Optional[List[float]] = None
        self.computed_emb: Optional[Tensor] = None


def nearest_kept_tokens(keys: Tensor, kept: Tensor) -> Tensor:
    """For every patch position, the kept position it copies its heatmap value from (docs/method.md §2.4).

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
            ``full_on_reset=False`` with a ``reset_pattern`` (docs/method.md §1b).
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
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, eps=eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.kernel = AttentionKernel("sdpa")
        self.rgtp = rgtp
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def rgtp(self) -> Optional[RGTPConfig]:
        """The pruning settings (None: dense). Assigning checks that this model honours every field: no
        relative positions, the forward rollout without pooling (the class row of the product)."""
        return self._rgtp

    @rgtp.setter
    def rgtp(self, cfg: Optional[RGTPConfig]) -> None:
        if cfg is not None:
            cfg.validate(self.num_tokens)
            cfg.check_supported(
                "ClsViT", rollout_mode=("forward",), rollout_pool=(1,), rel_pos_interp=("paper",)
            )
            blocks = cfg.rollout_blocks
            if blocks is not None:
                bad = [i for i in blocks if not 0 <= int(i) < len(self.blocks)]
                if bad or len(blocks) == 0:
                    raise ConfigError(
                        f"invalid RGTP setting rollout_blocks={list(blocks)!r}: allowed a non-empty list of "
                        f"block indices in [0, {len(self.blocks)})"
                    )
        self._rgtp = cfg

    @property
    def pruning(self) -> bool:
        """Whether RGTP pruning is configured and enabled."""
        return self.rgtp is not None and self.rgtp.enabled

    def new_state(self) -> ClsViTState:
        """A fresh per-batch state."""
        return ClsViTState()

    def num_kept(self, ftype: FrameType) -> int:
        """Kept patch tokens on a step of this type (N on full steps); static per config (docs/method.md §3.4)."""
        return kept_count(self.rgtp if self.pruning else None, self.grid, ftype)

    # ------------------------------------------------------------------------------------------------------------
    def _choose(
        self, emb: Tensor, state: ClsViTState, ftype: FrameType, tracked: Optional[Tensor]
    ) -> Optional[Tensor]:
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
        if cfg.selection == "change":
            scores = change_scores(emb, state.computed_emb)
        elif tracked is not None:  # the cut check tracked this step already
            scores = state.heatmap.gather(1, tracked)
        elif cfg.tracking_radius > 0 and state.prev_emb is not None:
            radius, border = cfg.tracking_radius, cfg.tracking_border
            scores = warp_heatmap(
                state.heatmap, emb, state.prev_emb, self.grid, radius, border=border
            )
        else:
            scores = state.heatmap
        return select_tokens(
            scores, k_fg, cfg.fg_sample_ratio, cfg.bg_sample_ratio, ties=cfg.tie_break
        )

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
                x = blk(x, kernel=self.kernel).x
            return self.norm(x[:, 0])
        return self._forward_pruned(x, emb, state)

    def _fusion(self, block: int, used: Sequence[int]) -> Optional[str]:
        return self.rgtp.head_fusion if self.rgtp is not None and block in used else None

    def _forward_pruned(self, x: Tensor, emb: Tensor, state: ClsViTState) -> Tensor:
        cfg = self.rgtp
        assert cfg is not None
        b, n, c = emb.shape
        state.t += 1
        ftype = frame_type(state.t, cfg.reset_period)
        state.reset_cause = "period" if ftype == FrameType.RESET else None
        state.match_quality, tracked = None, None
        if (
            ftype == FrameType.PRUNED
            and cfg.cut_threshold is not None
            and state.prev_emb is not None
        ):
            radius, border = cfg.tracking_radius, cfg.tracking_border
            tracked, sim = match_previous(emb, state.prev_emb, self.grid, radius, border)
            state.match_quality = match_quality(emb, state.prev_emb, tracked, sim).tolist()
            if min(state.match_quality) < cfg.cut_threshold:
                ftype, state.reset_cause, tracked = FrameType.RESET, "cut", None
        kept = self._choose(emb, state, ftype, tracked)
        used: Sequence[int] = (
            range(len(self.blocks))
            if cfg.rollout_blocks is None
            else [int(i) for i in cfg.rollout_blocks]
        )

        # block 0: full attention, then prune, then the MLP on the kept tokens (docs/method.md §4.1)
        idx = None
        if kept is not None:
            idx = torch.cat([kept.new_zeros(b, 1), kept + 1], dim=1)  # class token first
        o = self.blocks[0](
            x, keep=idx, project_pruned=True, fusion=self._fusion(0, used), kernel=self.kernel
        )
        x = o.x
        keys = split_heads(o.qkv[..., c : 2 * c], self.blocks[0].attn.num_heads)
        r: Optional[Tensor] = None
        if o.attn is not None:
            r = rollout.forward_rollout([rollout.residual_normalize(o.attn)])
            if idx is not None:
                r = _gather_rows_cols(r, idx)

        # blocks 1..: on the class token + kept tokens; rollout restricted to them (docs/method.md §2.4)
        for i, blk in enumerate(self.blocks):
            if i == 0:
                continue
            o = blk(x, fusion=self._fusion(i, used), kernel=self.kernel)
            x = o.x
            if o.attn is not None:
                a = rollout.residual_normalize(o.attn)
                r = rollout.forward_rollout([a]) if r is None else counting.matmul(a, r)
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
        if kept is None or state.computed_emb is None:
            state.computed_emb = emb.detach()
        else:
            idx = kept.unsqueeze(-1).expand(-1, -1, c)
            state.computed_emb = state.computed_emb.scatter(1, idx, emb.detach().gather(1, idx))
        state.kept = kept
        state.frame_type = ftype
        state.kept_counts.append(n if kept is None else int(kept.shape[1]))
        return out
