"""The pruned ViTDet backbone (method.md §1a, §4.1, §4.3, §6.1), with detectron2 ``ViT`` parameter names.

Dense use (``states=None``) is a plain ViTDet ViT. Streaming use passes one :class:`~rgtp.state.StreamState` per
video: full frames (first, reset) run every token and refill the caches; pruned frames select K tokens from the
tracked rollout heatmap before block 0's projection and run LN/QKV/projection/MLP of blocks 0(proj, MLP)–11 on the
kept tokens only. Kept queries attend against all keys: pruned tokens' keys and values come from each block's QKV
cache, and the output cache rebuilds the dense map for the detection head. Windowed blocks 1.. compute attention
for the kept queries only, each against the cached keys/values of its own window (``window_kept_only``). After the
head has run,
:meth:`PrunedViT.update_heatmap` turns this frame's attention into the rollout heatmap for the next frame.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import counting, rollout
from .config import ConfigError, RGTPConfig
from .posenc import relative_matrix, resize_abs_pos
from .selection import frame_type, is_full_frame, random_tokens, select_tokens
from .state import StreamState, stack_rows, unstack_rows
from .tracking import warp_heatmap

ATTENTION_KERNELS = ("sdpa", "explicit")


class Mlp(nn.Module):
    """fc1 → GELU → fc2, counted."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return counting.linear(self.act(counting.linear(x, self.fc1)), self.fc2)


class Attention(nn.Module):
    """Parameters of one attention layer (qkv, proj, decomposed relative-position tables)."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, use_rel_pos: bool, rel_size: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_size - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_size - 1, self.head_dim))


class Block(nn.Module):
    """A pre-LN transformer block, windowed (``window_size`` > 0) or global, that can run on kept tokens only."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        use_rel_pos: bool,
        window_size: int,
        rel_size: int,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, window_size or rel_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.window_size = window_size


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, n, C) → (B, H, n, d)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, H, n, d) → (B, n, C)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x[b, idx[b]] for x (B, N, C) and idx (B, K)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class PrunedViT(nn.Module):
    """ViTDet's plain ViT with Rollout-Guided Token Pruning.

    Args mirror detectron2's ``ViT`` (parameter names are identical, so ViTDet checkpoints load unchanged), plus:
        rel_pos_size: E of the global blocks' relative tables (default img_size // patch_size, the grid of the
            checkpoint); at another grid the tables are resized per ``rgtp.rel_pos_interp``.
        pad_input: pad inputs whose sides are not multiples of the patch size (bottom/right, zeros) instead of
            raising.
        attention: ``sdpa`` (fast: ``scaled_dot_product_attention`` wherever the probabilities are not needed for
            the rollout) or ``explicit`` (softmax(QKᵀ + bias)·V everywhere, the straightforward path; bit-identical to
            detectron2's ``ViT`` and, with K = N, between dense and pruned frames). Both agree to ~1e-6.
        rgtp: the pruning settings; None means dense only (the rollout is never computed).
        window_kept_only: on pruned frames with K < N, windowed blocks 1.. run attention for the K kept queries
            only, each against the (cached) keys and values of its own window (:meth:`_window_attention_kept`;
            exactly equivalent, and what :data:`rgtp.flops.EXECUTED` counts). Grouping the queries by window
            reads one count on the host, which on a GPU is a device synchronisation: None (default) means on for
            every device but CUDA, where pruned frames then stay free of host syncs (and capturable). False
            computes every window for all of its queries from the cache and keeps the kept rows (the official
            implementation's work). Windowed
            blocks whose probabilities the rollout needs, and frames keeping every token (so that ``explicit``
            stays bit-identical between dense and keep-all frames), always take that path.
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
        self.patch_embed.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size
        )
        if use_abs_pos:
            num_pos = (pretrain_img_size // patch_size) ** 2 + int(pretrain_use_cls_token)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim))
        else:
            self.pos_embed = None
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
        self.rgtp = rgtp
        if attention not in ATTENTION_KERNELS:
            raise ConfigError(f"invalid attention={attention!r}: allowed {ATTENTION_KERNELS}")
        self.attention = attention
        self.window_kept_only = window_kept_only
        self._streams: Optional[Sequence[StreamState]] = None
        self._cache: Dict[tuple, Tensor] = {}
        if rgtp is not None:
            blocks = self.rollout_blocks
            bad = [b for b in blocks if not 0 <= b < depth]
            if bad:
                raise ConfigError(
                    f"invalid RGTP setting rollout_blocks={list(blocks)}: allowed indices 0..{depth - 1}"
                )
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    # ------------------------------------------------------------------------------------------------ public API
    @property
    def rollout_blocks(self) -> Tuple[int, ...]:
        """Blocks whose attention enters the rollout: the configured ones, else the global blocks."""
        assert self.rgtp is not None
        if self.rgtp.rollout_blocks is not None:
            return tuple(self.rgtp.rollout_blocks)
        return self.global_block_indexes

    @contextlib.contextmanager
    def streams(self, states: Sequence[StreamState]) -> Iterator[None]:
        """Within this context ``forward(x)`` processes ``x`` as the next frame of ``states`` (for callers such as
        detectron2's ``SimpleFeaturePyramid`` that call the backbone with the image tensor only)."""
        previous, self._streams = self._streams, states
        try:
            yield
        finally:
            self._streams = previous

    def forward(
        self, x: Tensor, states: Optional[Sequence[StreamState]] = None
    ) -> Dict[str, Tensor]:
        """Run one frame per stream; returns ``{out_feature: (B, C, h, w)}``. See the module docstring."""
        states = states if states is not None else self._streams
        x = self._check_input(x)
        emb = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # (B, h, w, C): raw patch embeddings
        b, h, w, c = emb.shape
        grid = (h, w)
        tokens = emb
        if self.pos_embed is not None:
            tokens = counting.add(emb, self._abs_pos(grid, emb))
        tokens = tokens.reshape(b, h * w, c)
        if states is None:
            out = self._run(tokens, grid, None, None)
        else:
            if len(states) != b:
                raise ValueError(f"got {len(states)} stream states for a batch of {b} frames")
            if self.rgtp is None:
                raise ValueError(
                    "stream states were given, but the model was built without an RGTP config"
                )
            self.rgtp.validate(h * w)
            out = self._run_streams(tokens, emb.reshape(b, h * w, c), grid, states)
        return {self._out_features[0]: out.transpose(1, 2).reshape(b, c, h, w)}

    def update_heatmap(self, states: Sequence[StreamState], anchor_masks: Tensor) -> Tensor:
        """Compute this frame's rollout heatmap from its attention and ``anchor_masks`` ``(B, h, w)`` (all tokens are
        anchors where a mask is empty), store it in each state for the next frame, and return it ``(B, N)``.
        """
        assert self.rgtp is not None, "update_heatmap needs an RGTP config"
        groups: Dict[bool, List[int]] = {}
        for i, s in enumerate(states):
            if s.grid is None or not s.pending:
                raise RuntimeError(
                    "update_heatmap called before forward() processed a frame for this stream"
                )
            groups.setdefault(s.kept is None, []).append(i)
        result: List[Optional[Tensor]] = [None] * len(states)
        for full, idx in groups.items():
            heat = self._rollout_group([states[i] for i in idx], anchor_masks[idx], full)
            for j, i in enumerate(idx):
                result[i] = heat[j]
        return torch.stack(result)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------------ internals
    def _check_input(self, x: Tensor) -> Tensor:
        p = self.patch_size
        hh, ww = x.shape[-2:]
        if hh % p or ww % p:
            if not self.pad_input:
                raise ConfigError(
                    f"input of size {hh}x{ww} is not a multiple of patch_size={p}: pad the input (e.g. "
                    f"detectron2 square_pad / size_divisibility) or enable pad_input"
                )
            x = F.pad(x, (0, (-ww) % p, 0, (-hh) % p))
        return x

    def _memo(self, key: tuple, make) -> Tensor:
        # while torch.compile traces, recompute: the keys hold parameter ``_version`` counters that Dynamo cannot
        # read (the lookup would break the graph inside the block loop); inductor folds the small tables
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return make()
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _abs_pos(self, grid: Tuple[int, int], like: Tensor) -> Tensor:
        key = ("abs", grid, like.device, like.dtype, self.pos_embed._version)
        return self._memo(
            key, lambda: resize_abs_pos(self.pos_embed, self.pretrain_use_cls_token, grid)
        )

    def _rel(self, bi: int, size_h: int, size_w: int) -> Tuple[Tensor, Tensor]:
        attn = self.blocks[bi].attn
        mode = self.rgtp.rel_pos_interp if self.rgtp is not None else "paper"
        key = ("rel", bi, size_h, size_w, mode, attn.rel_pos_h._version, attn.rel_pos_h.device)
        return (
            self._memo(key + ("h",), lambda: relative_matrix(attn.rel_pos_h, size_h, mode)),
            self._memo(key + ("w",), lambda: relative_matrix(attn.rel_pos_w, size_w, mode)),
        )

    def _run_streams(
        self, tokens: Tensor, emb: Tensor, grid: Tuple[int, int], states: Sequence[StreamState]
    ) -> Tensor:
        cfg = self.rgtp
        assert cfg is not None
        groups: Dict[bool, List[int]] = {}
        for i, s in enumerate(states):
            if s.grid is not None and s.grid != grid:
                raise ValueError(
                    f"stream {i} changed its token grid from {s.grid} to {grid} without reset()"
                )
            s.t += 1
            s.frame_type = frame_type(s.t, cfg.reset_period)
            s.grid = grid
            groups.setdefault(is_full_frame(s.frame_type, cfg), []).append(i)
        if len(groups) == 1:
            full = next(iter(groups))
            return self._run_group(tokens, emb, grid, list(states), full)
        out = torch.empty_like(tokens)
        for full, idx in groups.items():
            sel = torch.tensor(idx, device=tokens.device)
            out[sel] = self._run_group(tokens[sel], emb[sel], grid, [states[i] for i in idx], full)
        return out

    def _select(self, emb: Tensor, grid: Tuple[int, int], states: Sequence[StreamState]) -> Tensor:
        cfg = self.rgtp
        assert cfg is not None
        n = grid[0] * grid[1]
        k = cfg.num_keep(n)
        if cfg.selection == "random":
            picks = []
            for s in states:
                if s.generator is None:
                    s.generator = torch.Generator().manual_seed(cfg.seed)
                picks.append(random_tokens(1, n, k, s.generator, emb.device))
            return torch.cat(picks)
        heat = stack_rows([s.heatmap for s in states])
        prev = stack_rows([s.embed for s in states])
        scores = warp_heatmap(heat, emb, prev, grid, cfg.tracking_radius)
        return select_tokens(scores, k, cfg.fg_sample_ratio, cfg.bg_sample_ratio)

    def _run_group(
        self,
        tokens: Tensor,
        emb: Tensor,
        grid: Tuple[int, int],
        states: List[StreamState],
        full: bool,
    ) -> Tensor:
        kept = None if full else self._select(emb, grid, states)
        caches = (
            None
            if full
            else {bi: stack_rows([s.qkv[bi] for s in states]) for bi in range(1, len(self.blocks))}
        )
        new_caches: Optional[Dict[int, Tensor]] = {} if full else None
        pending: Dict[int, Tensor] = {}
        out = self._run(tokens, grid, kept, caches, new_caches, pending)
        if kept is not None:
            # out of place: earlier frames' returned feature maps are views of the previous cache
            cache = stack_rows([s.output for s in states])
            out = cache.scatter(1, kept.unsqueeze(-1).expand(-1, -1, out.shape[-1]), out)
        out_rows = unstack_rows(out)
        emb_rows = unstack_rows(emb)
        kept_rows = unstack_rows(kept) if kept is not None else [None] * len(states)
        cache_rows = {bi: unstack_rows(c) for bi, c in (new_caches if full else caches).items()}
        pend_rows = {bi: unstack_rows(p) for bi, p in pending.items()}
        for j, s in enumerate(states):
            s.output = out_rows[j]
            s.embed = emb_rows[j]
            s.kept = kept_rows[j]
            s.qkv = {bi: rows[j] for bi, rows in cache_rows.items()}
            s.pending = {bi: rows[j] for bi, rows in pend_rows.items()}
        return out

    def _run(
        self,
        x: Tensor,
        grid: Tuple[int, int],
        kept: Optional[Tensor],
        caches: Optional[Dict[int, Tensor]],
        new_caches: Optional[Dict[int, Tensor]] = None,
        pending: Optional[Dict[int, Tensor]] = None,
    ) -> Tensor:
        """Blocks 0..L−1 on tokens ``x`` (B, N, C). With ``kept`` (B, K): prune in block 0, return (B, K, C)."""
        rollout_blocks = set(self.rollout_blocks) if pending is not None else set()
        n = x.shape[1]
        for bi, blk in enumerate(self.blocks):
            want_attn = bi in rollout_blocks
            if kept is None or bi == 0:
                h = blk.norm1(x)
                qkv = counting.linear(h, blk.attn.qkv)
                if new_caches is not None and bi > 0:
                    new_caches[bi] = qkv
                attn_out, probs = self._attention(bi, qkv, grid, None, want_attn)
                if kept is not None:  # block 0 of a pruned frame: prune before the projection
                    attn_out = _gather_rows(attn_out, kept)
                    counting.charge_paper_only(
                        "linear",
                        (n - kept.shape[1])
                        * blk.attn.proj.in_features
                        * blk.attn.proj.out_features,
                    )
                    counting.charge_paper_only(
                        "bias", (n - kept.shape[1]) * blk.attn.proj.out_features
                    )
                    counting.charge_paper_only("add", (n - kept.shape[1]) * x.shape[-1])
                    x = _gather_rows(x, kept)
                    if probs is not None:
                        probs = probs.gather(1, kept.unsqueeze(-1).expand(-1, -1, probs.shape[-1]))
            else:
                h = blk.norm1(x)
                qkv_k = counting.linear(h, blk.attn.qkv)
                cache = caches[bi]
                cache.scatter_(1, kept.unsqueeze(-1).expand(-1, -1, cache.shape[-1]), qkv_k)
                attn_out, probs = self._attention(bi, cache, grid, kept, want_attn, qkv_k)
            if probs is not None:
                pending[bi] = probs  # type: ignore[index]
            x = counting.add(x, counting.linear(attn_out, blk.attn.proj))
            x = counting.add(x, blk.mlp(blk.norm2(x)))
        return x

    def _attention(
        self,
        bi: int,
        qkv: Tensor,
        grid: Tuple[int, int],
        kept: Optional[Tensor],
        want_attn: bool,
        kept_qkv: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Attention of block ``bi`` from the full QKV (B, N, 3C) (``kept_qkv`` (B, K, 3C): the kept rows of it,
        if at hand). With ``kept``, windowed blocks compute only the kept queries inside their windows (or, with
        ``window_kept_only`` off, K = N, or when the rollout wants their probabilities, every window, then keep
        the kept rows); global blocks compute only the kept queries against all keys.
        Returns the output rows and, when ``want_attn``, the head-fused probabilities (B, rows, N).
        """
        blk = self.blocks[bi]
        if blk.window_size:
            if (
                kept is not None
                and kept.shape[1] < qkv.shape[1]
                and self.uses_window_kept_only(qkv.device)
                and not want_attn
            ):
                return self._window_attention_kept(bi, qkv, grid, kept, kept_qkv), None
            out, probs = self._window_attention(bi, qkv, grid, want_attn)
            if kept is not None:
                out = _gather_rows(out, kept)
            return out, probs
        return self._global_attention(bi, qkv, grid, kept, want_attn)

    def uses_window_kept_only(self, device: torch.device) -> bool:
        """Whether pruned frames on ``device`` take the kept-queries-only windowed attention (``window_kept_only``;
        None: everywhere but on CUDA, where its host read would synchronise the device)."""
        if self.window_kept_only is not None:
            return bool(self.window_kept_only)
        return torch.device(device).type != "cuda"

    def _attend(
        self,
        bi: int,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        pos: Tuple[Optional[Tensor], Optional[Tensor], int, int],
        want_attn: bool,
        counted_queries: Optional[int] = None,
        reuse_buffer: bool = True,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Softmax attention of queries ``q`` (B', H, n, d) over ``k``, ``v`` (B', H, M, d), with the decomposed
        relative-position bias for queries at ``pos`` = (rows (n,) or (B', n), columns, kh, kw); rows and columns
        None mean the queries are the whole kh×kw grid in raster order.

        When the probabilities are not needed (``want_attn`` False) this runs ``scaled_dot_product_attention`` with
        the bias as an additive mask; otherwise it materialises and also returns the probabilities (B', H, n, M).
        Both paths are counted alike: QKᵀ and AV MACs, relative einsums, two bias adds per logit, for
        ``counted_queries`` query rows in all (default B'·n; fewer when some rows of ``q`` are padding whose work
        is not useful and is not charged). ``reuse_buffer`` False skips the per-shape logits buffer (for shapes
        that change from frame to frame).
        """
        blk = self.blocks[bi]
        b, nh, nq, d = q.shape
        m = k.shape[2]
        rows = b * nq if counted_queries is None else counted_queries  # query rows charged
        rel = None
        if blk.attn.use_rel_pos:
            qy, qx, kh, kw = pos
            rh, rw = self._rel(bi, kh, kw)
            if qy is None and self.attention == "explicit":
                grid_pos = torch.arange(nq, device=q.device)
                qy, qx = grid_pos // kw, grid_pos % kw
            if qy is None:  # queries are the full kh×kw grid: no row gather needed
                qg = q.view(b, nh, kh, kw, d)
                rel_h = counting.einsum("bhyxd,ykd->bhyxk", qg, rh, rows * nh * kh * d)
                rel_w = counting.einsum("bhyxd,xkd->bhyxk", qg, rw, rows * nh * kw * d)
                rel_h, rel_w = rel_h.reshape(b, nh, nq, kh), rel_w.reshape(b, nh, nq, kw)
            else:
                rows_h, rows_w = rh[qy], rw[qx]  # (n, k, d) or (B', n, k, d)
                eq = "bhnd,nkd->bhnk" if rows_h.dim() == 3 else "bhnd,bnkd->bhnk"
                rel_h = counting.einsum(eq, q, rows_h, rows * nh * kh * d)
                rel_w = counting.einsum(eq, q, rows_w, rows * nh * kw * d)
            rel = (rel_h.unsqueeze(-1), rel_w.unsqueeze(-2))
        if not want_attn and self.attention == "sdpa":
            counting.charge("matmul", 2 * rows * nh * m * d)
            mask = None
            if rel is not None:
                mask = (rel[0] + rel[1]).view(b, nh, nq, m)
                # one add builds the mask, one adds it to the logits inside SDPA
                counting.charge("add", 2 * rows * nh * m)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return _merge_heads(out), None
        inference = not torch.is_grad_enabled()
        if inference and reuse_buffer:
            # reuse one logits buffer per shape: fresh H×n×M buffers every frame cost more in page faults than the
            # softmax itself on CPU; the probabilities (same buffer) are consumed before the next attention call
            logits = self._scratch((b, nh, nq, m), q.dtype, q.device)
            torch.matmul(q * blk.attn.scale, k.transpose(-1, -2), out=logits)
        else:
            logits = torch.matmul(q * blk.attn.scale, k.transpose(-1, -2))
        counting.charge("matmul", rows * nh * m * d)
        if rel is not None:
            grid_logits = logits.view(b, nh, nq, rel[0].shape[-2], rel[1].shape[-1])
            grid_logits.add_(rel[0]).add_(rel[1])
            counting.charge("add", 2 * rows * nh * m)
        if inference:
            probs = torch._softmax(
                logits, -1, False, out=logits
            )  # in place, same values as softmax()
        else:
            probs = logits.softmax(dim=-1)
        counting.charge("matmul", rows * nh * m * d)
        return _merge_heads(torch.matmul(probs, v)), probs if want_attn else None

    def _scratch(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A reusable inference buffer of ``shape`` (kept until the model is moved or trained)."""
        key = ("scratch", shape, dtype, device)
        buf = self._cache.get(key)
        if buf is None:
            buf = self._cache[key] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def _global_attention(
        self, bi: int, qkv: Tensor, grid: Tuple[int, int], kept: Optional[Tensor], want_attn: bool
    ) -> Tuple[Tensor, Optional[Tensor]]:
        blk = self.blocks[bi]
        nh = blk.attn.num_heads
        b, n, c3 = qkv.shape
        c = c3 // 3
        h, w = grid
        q, k, v = qkv.split(c, dim=-1)
        if kept is not None:
            q = _gather_rows(q, kept)
        q, k, v = (_split_heads(t, nh) for t in (q, k, v))
        nq = q.shape[2]
        d = q.shape[-1]
        qy = qx = None
        if kept is not None:
            qy, qx = kept // w, kept % w
            if blk.attn.use_rel_pos:
                missing = n - nq
                counting.charge_paper_only("einsum", b * nh * missing * (h + w) * d)
                counting.charge_paper_only("add", 2 * b * nh * missing * n)
        out, probs = self._attend(bi, q, k, v, (qy, qx, h, w), want_attn)
        fused = None
        if probs is not None:  # out = probs @ v is computed already: fuse in place
            fused = rollout.fuse_heads(probs, self.rgtp.head_fusion, inplace=True)
        return out, fused

    def _window_attention(
        self, bi: int, qkv: Tensor, grid: Tuple[int, int], want_attn: bool
    ) -> Tuple[Tensor, Optional[Tensor]]:
        blk = self.blocks[bi]
        ws = blk.window_size
        nh = blk.attn.num_heads
        b, n, c3 = qkv.shape
        c = c3 // 3
        h, w = grid
        ph, pw = (-h) % ws, (-w) % ws
        x = qkv.reshape(b, h, w, c3)
        if ph or pw:
            # padded tokens are zeros after norm1, so their QKV is the qkv bias
            bias = blk.attn.qkv.bias
            fill = bias if bias is not None else qkv.new_zeros(c3)
            x = torch.cat([x, fill.expand(b, h, pw, c3)], dim=2) if pw else x
            x = torch.cat([x, fill.expand(b, ph, w + pw, c3)], dim=1) if ph else x
        hp, wp = h + ph, w + pw
        nwin = (hp // ws) * (wp // ws)
        win = (
            x.reshape(b, hp // ws, ws, wp // ws, ws, c3)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(b * nwin, ws * ws, c3)
        )
        q, k, v = (_split_heads(t, nh) for t in win.split(c, dim=-1))  # (B·nw, H, ws², d)
        out, probs = self._attend(bi, q, k, v, (None, None, ws, ws), want_attn)
        out = (
            out.reshape(b, hp // ws, wp // ws, ws, ws, c)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(b, hp, wp, c)
        )
        out = out[:, :h, :w].reshape(b, n, c)
        if probs is None:
            return out, None
        return out, self._window_probs_to_full(
            rollout.fuse_heads(probs, self.rgtp.head_fusion), b, grid, ws
        )

    def _window_tokens(self, grid: Tuple[int, int], ws: int, device: torch.device) -> Tensor:
        """Token of every slot of every window: (nw, ws²) raster token indices into the h×w grid, −1 for slots in
        the bottom/right padding (memoised per grid)."""

        def make() -> Tensor:
            h, w = grid
            hp, wp = h + (-h) % ws, w + (-w) % ws
            y = torch.arange(hp, device=device)[:, None]
            x = torch.arange(wp, device=device)[None, :]
            tok = torch.where((y < h) & (x < w), y * w + x, torch.full_like(y * x, -1))
            return tok.reshape(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)

        return self._memo(("window_tokens", grid, ws, device), make)

    def _window_attention_kept(
        self,
        bi: int,
        qkv: Tensor,
        grid: Tuple[int, int],
        kept: Tensor,
        kept_qkv: Optional[Tensor] = None,
    ) -> Tensor:
        """Windowed attention of a pruned frame for the kept queries only: (B, K, C) rows in ``kept`` order.

        Each kept query attends to the ws² keys/values of its own window, read from the cache ``qkv`` (B, N, 3C)
        into which the kept rows' fresh QKV were scattered (``kept_qkv`` (B, K, 3C): those rows, else gathered),
        with the decomposed relative-position bias of its position inside the window; padded slots of windows
        that cross the bottom/right border have the qkv bias as K/V, as in :meth:`_window_attention`. The result
        equals the kept rows of :meth:`_window_attention` (up to float rounding).

        The kept queries are grouped by window (stable sort by window id, rank within the window) and padded to
        the largest count per window; only windows holding a kept query are computed, as one batch of queries
        (B·nw', H, maxc, d) against their K/V (B·nw', H, ws², d) (Q of the cache is never copied). Finding maxc and
        the occupied windows costs one device→host read (``counts.cpu()``), fine on CPU and in eager GPU mode but
        a graph break for CUDA graphs / ``torch.compile``. The useful work is charged: QKᵀ and AV over ws² keys and
        the relative terms for the B·K real queries (padding slots are computed but not charged); the paper tally
        also gets the B·(Nw − K) padded-grid queries the official code runs. On the ``meta`` device (shape-only
        FLOP counting, no data to group) the same FLOPs are charged and an empty (B, K, C) tensor is returned.
        """
        blk = self.blocks[bi]
        ws = blk.window_size
        nh = blk.attn.num_heads
        b, n, c3 = qkv.shape
        c = c3 // 3
        d = c // nh
        h, w = grid
        nk = kept.shape[1]
        hp, wp = h + (-h) % ws, w + (-w) % ws
        nww = wp // ws
        nwin = (hp // ws) * nww
        # the official code runs every (padded) query of every window: charge the rest to the paper tally
        missing = b * (hp * wp - nk)
        counting.charge_paper_only("matmul", 2 * missing * nh * ws * ws * d)
        if blk.attn.use_rel_pos:
            counting.charge_paper_only("einsum", missing * nh * 2 * ws * d)
            counting.charge_paper_only("add", 2 * missing * nh * ws * ws)

        if qkv.device.type == "meta":  # shape-only: charge through _attend, return the right shape
            maxc = min(nk, ws * ws)
            q = qkv.new_empty(b * nwin, nh, maxc, d)
            kv = qkv.new_empty(b * nwin, nh, ws * ws, d)
            pos = torch.zeros(b * nwin, maxc, dtype=torch.long, device=qkv.device)
            self._attend(bi, q, kv, kv, (pos, pos, ws, ws), False, b * nk, reuse_buffer=False)
            return qkv.new_empty(b, nk, c)

        dev = qkv.device
        ky, kx = kept // w, kept % w
        batch = torch.arange(b, device=dev).unsqueeze(1)
        wid = (batch * nwin + (ky // ws) * nww + kx // ws).reshape(-1)  # (B·K,) global window id
        sorted_wid, order = torch.sort(wid, stable=True)
        counts = torch.bincount(wid, minlength=b * nwin)
        counts_host = counts.cpu()  # the one host sync: maxc and the occupied windows
        maxc = int(counts_host.max())
        active = torch.nonzero(counts_host).squeeze(1).to(dev)  # occupied windows, ascending
        nact = active.numel()
        # slot of each sorted query: (index of its window among the occupied ones)·maxc + rank in the window
        new_win = torch.ones_like(sorted_wid)
        new_win[1:] = sorted_wid[1:] != sorted_wid[:-1]
        win_slot = torch.cumsum(new_win, 0) - 1
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(b * nk, device=dev) - starts[sorted_wid]
        dest = torch.empty_like(order)
        dest[order] = win_slot * maxc + rank  # slot of every kept query, in (b, k) order

        # queries, padded per window to maxc
        q_rows = kept_qkv[..., :c] if kept_qkv is not None else _gather_rows(qkv[..., :c], kept)
        q = qkv.new_zeros(nact * maxc, c).index_copy_(0, dest, q_rows.reshape(b * nk, c))
        q = q.view(nact, maxc, nh, d).transpose(1, 2)
        qy = torch.zeros(nact * maxc, dtype=torch.long, device=dev)
        qx = torch.zeros_like(qy)
        qy[dest] = (ky % ws).reshape(-1)
        qx[dest] = (kx % ws).reshape(-1)

        # keys and values of the occupied windows, from the cache (padded slots: the qkv bias)
        tok = self._window_tokens(grid, ws, dev)[active % nwin]  # (nact, ws²)
        rows = (active // nwin).unsqueeze(1) * n + tok.clamp(min=0)
        kv = qkv.reshape(b * n, c3)[:, c:].index_select(0, rows.reshape(-1))  # (nact·ws², 2C)
        if hp != h or wp != w:
            bias = blk.attn.qkv.bias
            fill = bias[c:].to(kv.dtype) if bias is not None else kv.new_zeros(2 * c)
            kv = torch.where((tok < 0).reshape(-1, 1), fill, kv)
        k, v = kv.view(nact, ws * ws, 2, nh, d).permute(2, 0, 3, 1, 4).unbind(0)

        out, _ = self._attend(
            bi,
            q,
            k,
            v,
            (qy.view(nact, maxc), qx.view(nact, maxc), ws, ws),
            False,
            b * nk,
            reuse_buffer=False,
        )  # (nact, maxc, C)
        return out.reshape(nact * maxc, c).index_select(0, dest).view(b, nk, c)

    @staticmethod
    def _window_probs_to_full(fused: Tensor, b: int, grid: Tuple[int, int], ws: int) -> Tensor:
        """Scatter per-window fused attention (B·nw, ws², ws²) into a dense (B, N, N) matrix over real tokens
        (only needed when a windowed block is explicitly put into the rollout)."""
        h, w = grid
        hp, wp = h + (-h) % ws, w + (-w) % ws
        idx = torch.arange(hp * wp, device=fused.device).reshape(hp, wp)
        real = (idx // wp < h) & (idx % wp < w)
        tok = torch.where(real, (idx // wp) * w + idx % wp, torch.full_like(idx, h * w))
        win_tok = tok.reshape(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
        nwin = win_tok.shape[0]
        full = fused.new_zeros(b, h * w + 1, h * w + 1)
        rows = win_tok[:, :, None].expand(nwin, ws * ws, ws * ws)
        cols = win_tok[:, None, :].expand(nwin, ws * ws, ws * ws)
        full[:, rows, cols] = fused.reshape(b, nwin, ws * ws, ws * ws)
        return full[:, : h * w, : h * w]

    # ------------------------------------------------------------------------------------------------ rollout
    def _rollout_group(self, states: List[StreamState], masks: Tensor, full: bool) -> Tensor:
        cfg = self.rgtp
        assert cfg is not None
        grid = states[0].grid
        assert grid is not None
        n = grid[0] * grid[1]
        pool = cfg.rollout_pool
        if pool > 1 and (grid[0] % pool or grid[1] % pool):
            raise ConfigError(
                f"invalid RGTP setting rollout_pool={pool}: the token grid {grid} is not divisible by it"
            )
        kept = None if full else stack_rows([s.kept for s in states])
        mats = []
        for bi in self.rollout_blocks:
            rows = stack_rows([s.pending[bi] for s in states])  # (B, rows, N)
            if pool > 1:
                rows = rollout.sum_pool_keys(rows, grid, pool)
            if full:
                buf = rollout.pool_queries(rows, grid, None, pool)[0] if pool > 1 else rows
            else:
                buf = stack_rows([s.attn[bi] for s in states])
                assert kept is not None
                if pool > 1:
                    scattered = rows.new_zeros(rows.shape[0], n, rows.shape[-1])
                    scattered.scatter_(1, kept.unsqueeze(-1).expand(-1, -1, rows.shape[-1]), rows)
                    km = torch.zeros(
                        rows.shape[0], n, dtype=torch.bool, device=rows.device
                    ).scatter_(1, kept, True)
                    pooled, count = rollout.pool_queries(scattered, grid, km, pool)
                    buf = torch.where((count > 0).unsqueeze(-1), pooled, buf)
                else:
                    buf = buf.clone().scatter_(
                        1, kept.unsqueeze(-1).expand(-1, -1, rows.shape[-1]), rows
                    )
            for j, s in enumerate(states):
                s.attn[bi] = buf[j]
            mats.append(rollout.residual_normalize(buf))
        anchors = masks.reshape(masks.shape[0], grid[0], grid[1])
        if pool > 1:
            anchors = rollout.pool_anchor_mask(anchors, pool)
        anchors = anchors.reshape(anchors.shape[0], -1)
        if cfg.rollout_mode == "backward":
            imp = rollout.backward_rollout(mats, rollout.anchor_vector(anchors).to(mats[0].dtype))
        else:
            imp = rollout.read_anchor_rows(rollout.forward_rollout(mats), anchors)
        if pool > 1:
            imp = rollout.upsample_heatmap(imp, grid, pool)
        if cfg.rollout_mode == "backward" and not full:
            prev = stack_rows([s.heatmap for s in states])
            km = torch.zeros_like(prev, dtype=torch.bool).scatter_(1, kept, True)
            imp = torch.where(km, imp, prev)
        heat = rollout.normalize(imp)
        for j, s in enumerate(states):
            s.heatmap = heat[j]
            s.pending = {}
        return heat
