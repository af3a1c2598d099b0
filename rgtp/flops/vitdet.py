"""Closed-form backbone FLOPs of one ViTDet frame (docs/method.md §5.2): full frames, pruned frames, both
conventions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Set, Tuple, Union

from ..config import RGTPConfig
from ..selection import FrameType, is_full_frame, kept_count
from .breakdown import (
    FlopBreakdown,
    Implementation,
    TransformerShape,
    add_attention,
    add_linear,
    add_selection_terms,
    implementation,
)


@dataclass(frozen=True)
class ViTDetSpec(TransformerShape):
    """Shape of a ViTDet backbone (detectron2 ``ViT`` arguments) and its input canvas.

    ``img_size`` is the padded input (an int for a square canvas, or ``(H, W)``), a multiple of ``patch_size``.
    """

    img_size: Union[int, Tuple[int, int]] = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    window_size: int = 14
    window_block_indexes: Tuple[int, ...] = (0, 1, 3, 4, 6, 7, 9, 10)
    rel_pos_size: Optional[int] = 64

    @property
    def image_hw(self) -> Tuple[int, int]:
        """The padded canvas ``(H, W)`` in pixels."""
        s = self.img_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def grid(self) -> Tuple[int, int]:
        """The token grid ``(h, w)``."""
        hh, ww = self.image_hw
        if hh % self.patch_size or ww % self.patch_size:
            raise ValueError(
                f"img_size {self.image_hw} is not a multiple of patch_size {self.patch_size}"
            )
        return hh // self.patch_size, ww // self.patch_size

    @property
    def windowed_tokens(self) -> int:
        """Nw: tokens of the grid padded up to whole windows (1764 at 672; 70² = 4900 at 1024)."""
        h, w = self.grid
        ws = self.window_size
        if ws <= 0:
            return h * w
        return math.ceil(h / ws) * ws * math.ceil(w / ws) * ws

    @property
    def global_blocks(self) -> Tuple[int, ...]:
        """Indices of the global-attention blocks (2, 5, 8, 11 for ViT-B)."""
        return tuple(i for i in range(self.depth) if i not in self.window_block_indexes)

    def is_windowed(self, i: int) -> bool:
        """Whether block ``i`` uses windowed attention."""
        return i in self.window_block_indexes and self.window_size > 0


#: The ViT-B backbone of the paper at the two canvases.
VITDET_B_672 = ViTDetSpec(img_size=672)
VITDET_B_1024 = ViTDetSpec(img_size=1024)


def vitdet_rgtp_config(
    img_size: int, keep_ratio: Optional[float] = None, **changes: Any
) -> RGTPConfig:
    """The RGTP settings of the paper's ViTDet rows: reset every 8 frames with full processing, RMS fusion over
    the global blocks, 2×2-pooled forward rollout at 672 and the backward rollout at 1024, radius-1 tracking.
    """
    pooled = img_size <= 672
    cfg = RGTPConfig(
        keep_ratio=keep_ratio,
        reset_period=8,
        full_on_reset=True,
        first_frame_full=True,
        rollout_pool=2 if pooled else 1,
        rollout_mode="forward" if pooled else "backward",
        tracking_radius=1,
    )
    return cfg.replace(**changes) if changes else cfg


def vitdet_frame_flops(
    spec: ViTDetSpec,
    cfg: Optional[RGTPConfig],
    ftype: FrameType = FrameType.FIRST,
    convention: Union[str, Implementation] = "paper",
) -> FlopBreakdown:
    """Closed-form backbone FLOPs of one ViTDet frame (docs/method.md §5.2).

    Args:
        spec: the backbone shape and canvas.
        cfg: the RGTP settings, or None for the dense baseline (no rollout, no pruning).
        ftype: first / reset / pruned; with ``cfg`` it decides (through :func:`rgtp.selection.is_full_frame`)
            whether the frame is pruned, to K = :func:`rgtp.selection.kept_count` tokens.
        convention: ``paper`` (the official implementation), ``executed`` (ours with kept-query windows,
            :data:`~rgtp.flops.EXECUTED`), or an :class:`Implementation` (e.g.
            :func:`~rgtp.flops.executed_convention` of the model's windowed path).

    Returns:
        The frame's FLOPs as named terms.

    Full frame: every block on all N tokens (linear, bias, two residual adds), windowed attention on the padded Nw
    queries, global attention N×N, relative position on all blocks, the position-encoding add, and with ``cfg`` the
    rollout (every frame of an RGTP config). Pruned frame: block 0 QKV and attention on N, pruning before its MLP,
    blocks 1.. on K rows, attention of kept queries against all N keys (cached), the rollout and the selection's
    own cost (:func:`~rgtp.flops.breakdown.add_selection_terms`: the offset matching N·(2r+1)²·D of the tracking,
    the cut check, the change scores); what runs on N rather than K is decided by ``convention``.
    """
    impl = implementation(convention)
    dense = cfg is None or not cfg.enabled
    if dense or is_full_frame(ftype, cfg):
        return _vitdet_frame(spec, None, impl, None if dense else cfg)
    n = spec.num_tokens
    k_fg = cfg.num_keep(n)
    if not 1 <= k_fg <= n:
        raise ValueError(
            f"invalid RGTP setting keep_tokens={k_fg}: allowed an integer in [1, N={n}]"
        )
    b = _vitdet_frame(spec, kept_count(cfg, spec.grid, ftype), impl, cfg)
    add_selection_terms(b, cfg, ftype, n, spec.embed_dim)
    return b


def _vitdet_rollout(b: FlopBreakdown, spec: ViTDetSpec, cfg: RGTPConfig) -> None:
    blocks = tuple(cfg.rollout_blocks) if cfg.rollout_blocks is not None else spec.global_blocks
    n = spec.num_tokens
    if cfg.rollout_mode == "backward":
        b.add("rollout", "matmul", len(blocks) * n * n)  # mat-vec per block
    else:
        h, w = spec.grid
        p = cfg.rollout_pool
        m = (h // p) * (w // p)
        b.add("rollout", "matmul", len(blocks) * m**3)  # (pooled) matrix product per block


def _vitdet_frame(
    spec: ViTDetSpec,
    k: Optional[int],
    impl: Implementation,
    cfg: Optional[RGTPConfig],
) -> FlopBreakdown:
    """The closed form (without the selection's own terms) as a sum of named pieces; ``k`` None for a full
    frame."""
    b = FlopBreakdown()
    n = spec.num_tokens
    h, w = spec.grid
    dim, heads, hd, hidden = spec.embed_dim, spec.num_heads, spec.head_dim, spec.mlp_hidden
    nw = spec.windowed_tokens
    ws = spec.window_size
    rel = spec.use_rel_pos
    full = k is None
    kk = n if full else k
    rollout_blocks: Set[int] = set()
    if cfg is not None:
        rollout_blocks = set(
            cfg.rollout_blocks if cfg.rollout_blocks is not None else spec.global_blocks
        )

    if spec.use_abs_pos:
        b.add("pos_embed.add", "add", n * dim)

    for i in range(spec.depth):
        windowed = spec.is_windowed(i)
        group = "window" if windowed else "global"
        rows = n if i == 0 else kk  # LN/QKV rows: block 0 always all N (pruning is inside it)
        add_linear(b, f"{group}.qkv", rows, dim, 3 * dim, spec.qkv_bias)

        # attention: which queries run, and for which rows the relative-position terms run
        if i == 0:
            q_att = kk if (impl.block0_attention_on_kept and not full) else None
        elif windowed:
            trim = impl.windowed_attention_on_kept and kk < n and i not in rollout_blocks
            q_att = kk if trim else None
        else:
            q_att = kk
        if windowed:
            queries = nw if q_att is None else q_att
            add_attention(b, group, heads, hd, queries, ws * ws, None, (ws, ws) if rel else None)
        else:
            queries = n if q_att is None else q_att
            rel_q = queries if i == 0 else (kk if impl.global_relpos_on_kept else n)
            add_attention(b, group, heads, hd, queries, n, rel_q, (h, w) if rel else None)

        # projection and first residual: block 0 on N unless our implementation trims it
        proj_rows = n if (i == 0 and not (impl.block0_proj_on_kept and not full)) else kk
        add_linear(b, f"{group}.proj", proj_rows, dim, dim)
        b.add(f"{group}.residual", "add", proj_rows * dim)
        # MLP and second residual: after pruning, K rows
        add_linear(b, f"{group}.fc1", kk, dim, hidden)
        add_linear(b, f"{group}.fc2", kk, hidden, dim)
        b.add(f"{group}.residual", "add", kk * dim)

    if cfg is not None:
        _vitdet_rollout(b, spec, cfg)
    return b
