"""Closed-form FLOPs of the factorised-encoder ViViT (docs/method.md §5.3): spatial steps, the temporal model and the
classifier, per video."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

from ..config import RGTPConfig
from ..selection import FrameType, frame_type, kept_count
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
class ViViTSpec(TransformerShape):
    """Shape of a factorised-encoder ViViT and its test protocol (docs/method.md §6.2, §7).

    ``num_classes`` is the classifier the paper counts (EPIC: the 97 verbs). ``noun_classes`` > 0 adds the EPIC
    noun head that our recogniser keeps (``MODEL.NUM_NOUN_CLASSES``) and the official model discards: it is counted
    under the paper's rules like any classifier, in both conventions (12·(768·300+300) FLOPs per EPIC video).
    """

    grid: Tuple[int, int] = (14, 14)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    temporal_depth: int = 4
    num_steps: int = 16
    num_classes: int = 400
    noun_classes: int = 0
    views: int = 12


#: Kinetics-400 (224², 14×14 tokens, 400 classes) and EPIC-Kitchens (320², 20×20, 97 verb classes; the 300-noun
#: head of configs/epic/*.yaml is executed but not charged by the paper).
VIVIT_KINETICS = ViViTSpec(grid=(14, 14), num_classes=400)
VIVIT_EPIC = ViViTSpec(grid=(20, 20), num_classes=97, noun_classes=300)


def grid_pattern_count(pattern: str, grid: Tuple[int, int]) -> int:
    """Tokens kept by a grid pattern (as :func:`rgtp.selection.grid_pattern`), computed arithmetically."""
    h, w = grid
    if pattern == "1in2":
        return math.ceil(h / 2) * math.ceil(w / 2) + (h // 2) * (w // 2)
    if pattern == "1in4":
        return math.ceil(h / 2) * math.ceil(w / 2)
    raise ValueError(f"unknown grid pattern {pattern!r}: allowed ('1in2', '1in4')")


def _vivit_block(b: FlopBreakdown, spec: ViViTSpec, name: str, rows_in: int, rows_out: int) -> None:
    """One pre-LN block whose attention runs on ``rows_in`` tokens and whose MLP runs on ``rows_out``."""
    dim, heads, hd, hidden = spec.embed_dim, spec.num_heads, spec.head_dim, spec.mlp_hidden
    add_linear(b, f"{name}.qkv", rows_in, dim, 3 * dim, spec.qkv_bias)
    add_attention(b, name, heads, hd, rows_in, rows_in)
    add_linear(b, f"{name}.proj", rows_in, dim, dim)
    b.add(f"{name}.residual", "add", rows_in * dim)
    add_linear(b, f"{name}.fc1", rows_out, dim, hidden)
    add_linear(b, f"{name}.fc2", rows_out, hidden, dim)
    b.add(f"{name}.residual", "add", rows_out * dim)


def vivit_frame_flops(
    spec: ViViTSpec,
    cfg: Optional[RGTPConfig],
    ftype: FrameType = FrameType.FIRST,
    convention: Union[str, Implementation] = "paper",
) -> FlopBreakdown:
    """Closed-form FLOPs of one spatial-model step (one tubelet of one view) (docs/method.md §5.3).

    Args:
        spec: the model shape.
        cfg: the RGTP settings, or None for the dense model.
        ftype: first / reset / pruned; K = :func:`rgtp.selection.kept_count` of the step.
        convention: ``paper``, ``executed`` or an :class:`Implementation`; validated only.

    Returns:
        The step's FLOPs as named terms.

    Dense: position-encoding add on N+1 tokens and every block on N+1 tokens. With ``cfg``: the forward rollout
    over all blocks ((N+1)³ for block 0, then (K+1)³ per later block); on pruned frames (K kept) block 0 runs
    QKV/attention/projection on N+1 and its MLP on K+1, later blocks on K+1, plus nearest-kept-token matching
    (N−K)·K·d; on pruned frames the selection's own cost (:func:`~rgtp.flops.breakdown.add_selection_terms`:
    the offset matching N·(2r+1)²·D of the tracking, the cut check, the change scores).
    Both conventions are equal for ViViT (pruned tokens are dropped, nothing is wasted); ``convention`` is
    validated only (the conventions differ only by the EPIC noun head, :func:`vivit_temporal_flops`).
    """
    implementation(convention)
    n = spec.num_tokens
    b = FlopBreakdown()
    dense = cfg is None or not cfg.enabled
    k = kept_count(cfg, spec.grid, ftype)
    b.add("pos_embed.add", "add", (n + 1) * spec.embed_dim)
    for i in range(spec.depth):
        rows_in = n + 1 if i == 0 else k + 1
        _vivit_block(b, spec, "spatial", rows_in, k + 1)
    if dense:
        return b
    blocks = (
        tuple(cfg.rollout_blocks) if cfg.rollout_blocks is not None else tuple(range(spec.depth))
    )
    b.add("rollout", "matmul", sum((n + 1 if i == 0 else k + 1) ** 3 for i in blocks))
    if k < n:
        b.add("token_matching", "matmul", (n - k) * k * spec.head_dim)
    add_selection_terms(b, cfg, ftype, n, spec.embed_dim)
    return b


def vivit_temporal_flops(
    spec: ViViTSpec, convention: Union[str, Implementation] = "paper"
) -> FlopBreakdown:
    """The temporal transformer (num_steps + 1 tokens, temporal_depth blocks, position-encoding add) and the
    classifier, per view, with the noun head (``spec.noun_classes``) when present.
    """
    implementation(convention)  # validates the name; both conventions are equal here
    b = FlopBreakdown()
    t = spec.num_steps + 1
    b.add("temporal.pos_embed.add", "add", t * spec.embed_dim)
    for _ in range(spec.temporal_depth):
        _vivit_block(b, spec, "temporal", t, t)
    add_linear(b, "classifier", 1, spec.embed_dim, spec.num_classes)
    if spec.noun_classes > 0:
        add_linear(b, "noun_classifier", 1, spec.embed_dim, spec.noun_classes)
    return b


def vivit_video_flops(
    spec: ViViTSpec,
    cfg: Optional[RGTPConfig],
    convention: Union[str, Implementation] = "paper",
    views: Optional[int] = None,
) -> FlopBreakdown:
    """Per-video FLOPs: views × (Σ over tubelet steps t of the step's frame + temporal model + classifier), with
    step t first (t=0), reset (t%F==0) or pruned as :func:`rgtp.selection.frame_type` says."""
    view = FlopBreakdown()
    for t in range(spec.num_steps):
        ftype = frame_type(t, cfg.reset_period) if cfg is not None else FrameType.FIRST
        view = view + vivit_frame_flops(spec, cfg, ftype, convention)
    view = view + vivit_temporal_flops(spec, convention)
    return view.scaled(spec.views if views is None else views)


def vivit_step_types(spec: ViViTSpec, cfg: Optional[RGTPConfig]) -> Dict[FrameType, int]:
    """How many tubelet steps of one view are first / reset / pruned (all ``FIRST`` for the dense model)."""
    out: Dict[FrameType, int] = {}
    for t in range(spec.num_steps):
        ftype = (
            frame_type(t, cfg.reset_period) if cfg is not None and cfg.enabled else FrameType.FIRST
        )
        out[ftype] = out.get(ftype, 0) + 1
    return out


def vivit_video_from_steps(
    spec: ViViTSpec,
    cfg: Optional[RGTPConfig],
    step_flops: Dict[FrameType, int],
    views: Optional[int] = None,
    convention: Union[str, Implementation] = "paper",
) -> int:
    """Per-video FLOPs from per-step counts of each frame type (e.g. measured), plus the closed-form temporal
    model and classifier: views × (Σ_types count·step_flops + temporal)."""
    per_view = sum(n * step_flops[ft] for ft, n in vivit_step_types(spec, cfg).items())
    per_view += vivit_temporal_flops(spec, convention).total
    return per_view * (spec.views if views is None else views)
