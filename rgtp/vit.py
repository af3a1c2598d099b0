"""The pruned ViTDet backbone (docs/method.md §1, §4), with detectron2 ``ViT`` parameter names.

Dense use (``states=None``) is a plain ViTDet ViT. Streaming use passes one :class:`~rgtp.state.StreamState` per
video: full frames (first, reset) run every token and refill the caches; pruned frames select K tokens from the
tracked rollout heatmap (or, on reset frames with ``full_on_reset`` off, the reset grid pattern), prune in block 0
after its attention, and run the later blocks on the kept tokens against the cached keys and values of the others
(:meth:`rgtp.blocks.Block.forward_cached`); the output cache rebuilds the dense map for the detection head. After the
head has run, :meth:`PrunedViT.update_heatmap` turns this frame's attention into the heatmap for the next frame
(:func:`rgtp.rollout.update_streams`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import counting, rollout
from .attention import AttentionKernel, Memo, gather_rows, version
from .autocast import autocast_dtype
from .blocks import Block
from .config import ConfigError, RGTPConfig
from .posenc import resize_abs_pos
from .schedule import PATTERN, SELECT, advance_streams, tracked_sources
from .selection import change_scores, grid_pattern, num_selected, random_tokens, select_tokens
from .state import StreamState, stack_rows, unstack_rows
from .tracking import warp_heatmap


def init_weights(m: nn.Module) -> None:
    """detectron2 ViT's initialisation: truncated-normal linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def pad_to_patches(x: Tensor, patch_size: int, pad: bool) -> Tensor:
    """``x`` (B, 3, H, W), padded bottom/right with zeros to multiples of ``patch_size`` when ``pad`` (else a
    :class:`ConfigError` for such input)."""
    hh, ww = x.shape[-2:]
    if hh % patch_size or ww % patch_size:
        if not pad:
            raise ConfigError(
                f"input of size {hh}x{ww} is not a multiple of patch_size={patch_size}: pad the input (e.g. "
                f"detectron2 square_pad / size_divisibility) or enable pad_input"
            )
        x = F.pad(x, (0, (-ww) % patch_size, 0, (-hh) % patch_size))
    return x


class PrunedViT(nn.Module):
    """ViTDet's plain ViT with Rollout-Guided Token Pruning.

    Args mirror detectron2's ``ViT`` (parameter names are identical, so ViTDet checkpoints load unchanged), plus:
        rel_pos_size: E of the global blocks' relative tables (default img_size // patch_size, the grid of the
            checkpoint); at another grid the tables are resized per ``rgtp.rel_pos_interp``.
        pad_input: pad inputs whose sides are not multiples of the patch size (bottom/right, zeros) instead of
            raising.
        attention: the kernel (:class:`rgtp.attention.AttentionKernel`): ``sdpa`` (fast) or ``explicit``
            (bit-identical to detectron2's ``ViT`` and, with K = N, between dense and pruned frames).
        rgtp: the pruning settings; None means dense only (the rollout is never computed).
        window_kept_only: on pruned frames, windowed blocks 1.. run attention for the kept queries only, each
            against the cached keys and values of its window (exact; the ``executed`` FLOP convention's
            ``windowed_attention_on_kept``). Grouping the queries by window reads one count on the host, a device
            synchronisation on a GPU: None (default) means on for every device but CUDA (:meth:`uses_window_kept_
            only`). False computes every window from the cache and keeps the kept rows (the official work).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        rel_pos_size: Optional[int] = None,
        window_size: int = 14,
        window_block_indexes: Sequence[int] = (0, 1, 3, 4, 6, 7, 9, 10),
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        out_feature: str = "last_feat",
        pad_input: bool = False,
        attention: str = "sdpa",
        rgtp: Optional[RGTPConfig] = None,
        window_kept_only: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(f"embed_dim={embed_dim} must be a multiple of num_heads={num_heads}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.pad_input = pad_input
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.window_block_indexes = tuple(window_block_indexes)
        self.global_block_indexes = tuple(
            i for i in range(depth) if i not in self.window_block_indexes
        )
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            num_pos = (pretrain_img_size // patch_size) ** 2 + int(pretrain_use_cls_token)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim))
        rel_size = rel_pos_size or img_size // patch_size
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                use_rel_pos,
                window_size if i in self.window_block_indexes else 0,
                rel_size,
            )
            for i in range(depth)
        )
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: embed_dim}
        self._out_feature_strides = {out_feature: patch_size}
        self.kernel = AttentionKernel(attention)
        self.window_kept_only = window_kept_only
        self._memo = Memo()
        self.rgtp = rgtp
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    # ------------------------------------------------------------------------------------------------ settings
    @property
    def rgtp(self) -> Optional[RGTPConfig]:
        """The pruning settings (None: dense only). Assigning checks that this model honours every field."""
        return self._rgtp

    @rgtp.setter
    def rgtp(self, cfg: Optional[RGTPConfig]) -> None:
        if cfg is not None:
            # the first frame fills the caches that pruned frames read
            cfg.check_supported("PrunedViT", first_frame_full=(True,))
            bad = [b for b in cfg.rollout_blocks or () if not 0 <= b < len(self.blocks)]
            if bad:
                raise ConfigError(
                    f"invalid RGTP setting rollout_blocks={list(cfg.rollout_blocks)}: allowed indices "
                    f"0..{len(self.blocks) - 1}"
                )
        self._rgtp = cfg
        for blk in self.blocks:
            blk.attn.rel_pos_interp = cfg.rel_pos_interp if cfg is not None else "paper"

    @property
    def attention(self) -> str:
        """The attention kernel's name (``sdpa`` or ``explicit``)."""
        return self.kernel.name

    @property
    def rollout_blocks(self) -> Tuple[int, ...]:
        """Blocks whose attention enters the rollout: the configured ones, else the global blocks."""
        if self.rgtp is None:
            return ()
        if self.rgtp.rollout_blocks is not None:
            return tuple(self.rgtp.rollout_blocks)
        return self.global_block_indexes

    def uses_window_kept_only(self, device: torch.device) -> bool:
        """Whether pruned frames on ``device`` run the windowed blocks for the kept queries only."""
        if self.window_kept_only is not None:
            return bool(self.window_kept_only)
        return torch.device(device).type != "cuda"

    # ------------------------------------------------------------------------------------------------ frames
    def forward(
        self, x: Tensor, states: Optional[Sequence[StreamState]] = None
    ) -> Dict[str, Tensor]:
        """One frame per stream ``x`` (B, 3, H, W); returns ``{out_feature: (B, C, H/p, W/p)}``. Without
        ``states`` the model is dense and touches no state; with them each state advances by one frame.
        """
        x = pad_to_patches(x, self.patch_size, self.pad_input)
        emb = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # (B, h, w, C): raw patch embeddings
        b, h, w, c = emb.shape
        grid = (h, w)
        tokens = emb if self.pos_embed is None else counting.add(emb, self._abs_pos(grid, emb))
        tokens = tokens.reshape(b, h * w, c)
        emb = emb.reshape(b, h * w, c)
        if states is None:
            out = self._blocks(tokens, grid, None, {}, None)
        else:
            if len(states) != b:
                raise ValueError(f"got {len(states)} stream states for a batch of {b} frames")
            if self.rgtp is None:
                raise ValueError("stream states were given, but the model has no RGTP config")
            self.rgtp.validate(h * w)
            out = torch.empty_like(tokens)
            dtype = self._compute_dtype(tokens.device)
            for s in states:
                if s.qkv and next(iter(s.qkv.values())).dtype != dtype:
                    s.reset()  # caches of another precision (autocast switched): the stream starts again
            groups, sources = advance_streams(states, grid, emb, self.rgtp)
            for kind, idx in groups.items():
                sel = torch.tensor(idx, device=tokens.device)
                group = [states[i] for i in idx]
                tracked = tracked_sources(sources, idx)
                rows = self._run_group(tokens[sel], emb[sel], grid, group, kind, tracked)
                if len(idx) == b:
                    out = rows
                else:
                    out[sel] = rows
        return {self._out_features[0]: out.transpose(1, 2).reshape(b, c, h, w)}

    def update_heatmap(self, states: Sequence[StreamState], anchor_masks: Tensor) -> Tensor:
        """This frame's rollout heatmap ``(B, N)`` from its attention and ``anchor_masks`` ``(B, h, w)`` (all
        tokens are anchors where a mask is empty); stored in each state for the next frame
        (:func:`rgtp.rollout.update_streams`)."""
        if self.rgtp is None:
            raise ValueError("update_heatmap needs an RGTP config")
        return rollout.update_streams(states, anchor_masks, self.rollout_blocks, self.rgtp)

    # ------------------------------------------------------------------------------------------------ internals
    def _abs_pos(self, grid: Tuple[int, int], like: Tensor) -> Tensor:
        assert self.pos_embed is not None
        key = ("abs", grid, like.device, like.dtype, version(self.pos_embed))
        cls = self.pretrain_use_cls_token
        return self._memo.get(key, lambda: resize_abs_pos(self.pos_embed, cls, grid))

    def _select(
        self,
        emb: Tensor,
        grid: Tuple[int, int],
        states: Sequence[StreamState],
        tracked: Optional[Tensor],
    ) -> Tensor:
        """Kept tokens (B, K) of pruned frames: top-K of the tracked heatmap (``tracked``: the tracking sources,
        when the cut check computed them already), or a baseline (random, change)."""
        cfg = self.rgtp
        assert cfg is not None
        n = grid[0] * grid[1]
        k = cfg.num_keep(n)
        if cfg.selection == "random":  # as many tokens as the sampled selection keeps
            k = num_selected(n, k, cfg.fg_sample_ratio, cfg.bg_sample_ratio)
            picks = []
            for s in states:
                if s.generator is None:
                    s.generator = torch.Generator().manual_seed(cfg.seed)
                picks.append(random_tokens(1, n, k, s.generator, emb.device))
            return torch.cat(picks)
        if cfg.selection == "change":
            scores = change_scores(emb, stack_rows([s.computed_embed for s in states]))
        else:
            heat = stack_rows([s.heatmap for s in states])
            if tracked is not None:
                scores = heat.gather(1, tracked)
            else:
                prev = stack_rows([s.embed for s in states])
                radius, border = cfg.tracking_radius, cfg.tracking_border
                scores = warp_heatmap(heat, emb, prev, grid, radius, border=border)
        return select_tokens(
            scores, k, cfg.fg_sample_ratio, cfg.bg_sample_ratio, ties=cfg.tie_break
        )

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the QKV caches are computed in now: autocast's for ``device``, else the weights'."""
        return autocast_dtype(device) or self.blocks[0].attn.qkv.weight.dtype

    def _run_group(
        self,
        tokens: Tensor,
        emb: Tensor,
        grid: Tuple[int, int],
        states: List[StreamState],
        kind: str,
        tracked: Optional[Tensor] = None,
    ) -> Tensor:
        """One frame of streams of the same kind; updates their caches and returns (B, N, C)."""
        kept = None
        if kind == SELECT:
            kept = self._select(emb, grid, states, tracked)
        elif kind == PATTERN:
            assert self.rgtp is not None and self.rgtp.reset_pattern is not None
            pattern = grid_pattern(self.rgtp.reset_pattern, grid, tokens.device)
            kept = pattern.unsqueeze(0).expand(len(states), -1)
        if kept is None:
            # a full frame refills every cache: free the old ones before it runs (peak memory)
            for s in states:
                s.qkv, s.attn, s.output, s.computed_embed = {}, {}, None, None
        caches = {}
        if kept is not None:
            caches = {
                bi: stack_rows([s.qkv[bi] for s in states]) for bi in range(1, len(self.blocks))
            }
        pending: Dict[int, Tensor] = {}
        out = self._blocks(tokens, grid, kept, caches, pending)
        if kept is not None:
            # out of place: earlier frames' returned feature maps are views of the previous cache
            cache = stack_rows([s.output for s in states])
            out = cache.scatter(1, kept.unsqueeze(-1).expand(-1, -1, out.shape[-1]), out)
        computed = emb
        if kept is not None and self.rgtp is not None and self.rgtp.selection == "change":
            idx = kept.unsqueeze(-1).expand(-1, -1, emb.shape[-1])
            computed = stack_rows([s.computed_embed for s in states]).scatter(
                1, idx, emb.gather(1, idx)
            )
        rows = {"output": unstack_rows(out), "embed": unstack_rows(emb)}
        rows["computed"] = unstack_rows(computed)
        kept_rows = unstack_rows(kept) if kept is not None else [None] * len(states)
        cache_rows = {bi: unstack_rows(c) for bi, c in caches.items()}
        pend_rows = {bi: unstack_rows(p) for bi, p in pending.items()}
        for j, s in enumerate(states):
            s.output, s.embed, s.kept = rows["output"][j], rows["embed"][j], kept_rows[j]
            s.computed_embed = rows["computed"][j]
            s.qkv = {bi: r[j] for bi, r in cache_rows.items()}
            s.pending = {bi: r[j] for bi, r in pend_rows.items()}
        return out

    def _blocks(
        self,
        x: Tensor,
        grid: Tuple[int, int],
        kept: Optional[Tensor],
        caches: Dict[int, Tensor],
        pending: Optional[Dict[int, Tensor]],
    ) -> Tensor:
        """The block loop on tokens ``x`` (B, N, C). Full frames (``kept`` None) fill ``caches`` with every
        block's QKV; with ``kept`` (B, K) block 0 prunes and the others run on the caches; returns (B, K, C).
        ``pending`` receives the fused attention of the rollout blocks (None: dense use, no rollout).
        """
        fusion_of = (
            {bi: self.rgtp.head_fusion for bi in self.rollout_blocks} if pending is not None else {}
        )
        kept_windows = self.uses_window_kept_only(x.device)
        for bi, blk in enumerate(self.blocks):
            fusion = fusion_of.get(bi)
            attn = None
            if kept is None or bi == 0:
                o = blk(x, grid, keep=kept, fusion=fusion, kernel=self.kernel)
                if kept is None and bi > 0 and pending is not None:
                    caches[bi] = o.qkv
                if o.attn is not None:  # block 0 attends for every query; the kept rows are fresh
                    attn = o.attn if kept is None else gather_rows(o.attn, kept)
            else:
                o = blk.forward_cached(
                    x,
                    kept,
                    caches[bi],
                    grid,
                    fusion=fusion,
                    kernel=self.kernel,
                    kept_windows=kept_windows,
                )
                attn = o.attn
            x = o.x
            if attn is not None:
                pending[bi] = attn  # type: ignore[index]
        return x
