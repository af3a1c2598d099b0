"""FLOP accounting with the paper's conventions (method.md §5): closed forms, the frame-schedule average, the
published numbers, and runners that count the model by executing it (on the ``meta`` device).

Conventions (method.md §5.1): one multiply-accumulate = one FLOP; backbone only; counted are linear layers (MACs),
their bias adds, matmuls (attention, rollout, token matching), the relative-position einsums and tensor adds
(residuals, position encoding, relative-position bias adds). Not counted: patch/tubelet embedding, LayerNorm,
softmax, GELU, the q scaling, pooling, interpolation, gather/scatter/sort, and the detection neck and head (ViViT
counts its temporal model and classifier). The
categories are those of :mod:`rgtp.counting` (``linear``, ``bias``, ``matmul``, ``einsum``, ``add``), so a closed
form can be compared with a measured count category by category.

Two figures exist for every configuration:

* ``paper``: what the official implementation executes and the paper charges. On ViTDet pruned frames it runs block
  0's projection and first residual on all N tokens, windowed attention (with its relative-position terms) for all
  N (padded) queries in every windowed block, and the global blocks' relative-position einsum and bias adds at full
  N×N (method.md §5.2, §9.1).
* ``executed``: what our implementation runs. It skips some of that wasted work; which parts exactly is described
  by an :class:`Implementation` (:data:`EXECUTED`), so that the closed form follows the implementation when it
  changes. Full frames and all ViViT frames cost the same in both conventions; the only ViViT difference is the
  EPIC noun head our recogniser runs and the official model discards (charged to ``executed`` only).

ViTDet is reported per frame averaged over all ImageNet-VID val frames, ``f·F + (1−f)·P`` with the full-frame
fraction :data:`VID_VAL_FULL_FRAME_FRACTION`; ViViT per video (12 views, spatial + temporal model + classifier).

This module imports only torch and the core (:mod:`rgtp.counting`, :mod:`rgtp.config`, :mod:`rgtp.selection`);
:func:`vitdet_frame_flops_measured` imports :mod:`rgtp.vit` and :mod:`rgtp.state` lazily, the ViViT runners
:mod:`rgtp.cls_vit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch

from .config import RGTPConfig
from .counting import CATEGORIES, FlopCounter
from .selection import FrameType, frame_type, is_full_frame, num_selected

#: Fraction of full frames (t = 0 or t % 8 == 0 within each contiguous segment) among all ImageNet-VID val frames,
#: Σ_v ⌈T_v/8⌉ / Σ_v T_v. Solved jointly from the 10 pruned ViTDet rows of the paper (method.md §5.2; ±0.00004);
#: consistent with the 555 val snippets and 176,126 frames. :func:`full_frame_fraction` computes it from a split.
VID_VAL_FULL_FRAME_FRACTION = 0.12654

#: The two conventions every count is given in (see the module docstring and :class:`Implementation`).
CONVENTIONS = ("paper", "executed")


# ---------------------------------------------------------------------------------------------------------------
# Breakdown container
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FlopBreakdown:
    """FLOPs as named terms, each in one :mod:`rgtp.counting` category.

    ``terms`` maps a term name (e.g. ``"global.attention"``) to ``(category, flops)``. Adding two breakdowns adds
    terms of the same name, so per-frame breakdowns sum into a per-video one that still says where FLOPs go.
    """

    terms: Dict[str, Tuple[str, int]] = field(default_factory=dict)

    def add(self, name: str, category: str, flops: int) -> None:
        """Add ``flops`` (an exact integer) to term ``name`` of ``category``."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown FLOP category {category!r}: allowed {CATEGORIES}")
        flops = int(flops)
        if flops < 0:
            raise ValueError(f"negative FLOPs for term {name!r}: {flops}")
        if name in self.terms:
            old_cat, old = self.terms[name]
            if old_cat != category:
                raise ValueError(f"term {name!r} is in category {old_cat!r}, not {category!r}")
            self.terms[name] = (category, old + flops)
        else:
            self.terms[name] = (category, flops)

    @property
    def total(self) -> int:
        """The plain sum of all terms: the number the paper reports."""
        return sum(v for _, v in self.terms.values())

    def by_category(self) -> Dict[str, int]:
        """Totals per :mod:`rgtp.counting` category (all categories present, zeros included)."""
        out = {c: 0 for c in CATEGORIES}
        for cat, v in self.terms.values():
            out[cat] += v
        return out

    def scaled(self, k: int) -> "FlopBreakdown":
        """Every term multiplied by the integer ``k`` (e.g. the number of views)."""
        return FlopBreakdown({n: (c, v * int(k)) for n, (c, v) in self.terms.items()})

    def __add__(self, other: "FlopBreakdown") -> "FlopBreakdown":
        out = FlopBreakdown(dict(self.terms))
        for name, (cat, v) in other.terms.items():
            out.add(name, cat, v)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Which wasted work an implementation skips (paper vs executed)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Implementation:
    """Which parts of the official implementation's wasted work on ViTDet pruned frames are skipped.

    Every flag False is the official implementation (the ``paper`` convention). The ``executed`` convention is
    :data:`EXECUTED`; when our model (:mod:`rgtp.vit`) skips more or less work, change that constant.

    Attributes:
        block0_proj_on_kept: block 0's attention projection, its bias and the first residual add run on the K kept
            rows instead of all N.
        block0_attention_on_kept: block 0's attention (QKᵀ, AV, relative position) runs for the K kept queries only
            (against all keys of their window / of the grid) instead of all N.
        windowed_attention_on_kept: windowed blocks 1.. run attention (and its relative-position terms) for the K
            kept queries only (each against the ws² keys of its window) instead of all Nw padded queries; padding
            slots of the per-window query batches are not charged. Windowed blocks in the rollout (only when
            ``rollout_blocks`` names them) still run all Nw queries: the rollout needs their full probabilities;
            so do frames that keep every token (K = N: the dense windows, bit-identical to a dense frame).
        global_relpos_on_kept: global blocks compute the relative-position einsum and the two bias adds for the K
            kept query rows (einsum H·K·(h+w)·d, adds 2·H·K·N) instead of at full N.
    """

    block0_proj_on_kept: bool = False
    block0_attention_on_kept: bool = False
    windowed_attention_on_kept: bool = False
    global_relpos_on_kept: bool = False


#: The official implementation: what the paper's numbers charge.
PAPER = Implementation()
#: What our implementation (rgtp/vit.py, default ``window_kept_only=True``) executes on pruned frames.
EXECUTED = Implementation(
    block0_proj_on_kept=True, global_relpos_on_kept=True, windowed_attention_on_kept=True
)


def implementation(convention: Union[str, Implementation]) -> Implementation:
    """The :class:`Implementation` of a convention name (``paper`` or ``executed``), or the argument itself."""
    if isinstance(convention, Implementation):
        return convention
    if convention == "paper":
        return PAPER
    if convention == "executed":
        return EXECUTED
    raise ValueError(f"unknown FLOP convention {convention!r}: allowed {CONVENTIONS}")


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------


def _linear(
    b: FlopBreakdown, name: str, rows: int, d_in: int, d_out: int, bias: bool = True
) -> None:
    b.add(f"{name}.linear", "linear", rows * d_in * d_out)
    if bias:
        b.add(f"{name}.bias", "bias", rows * d_out)


def _attention(
    b: FlopBreakdown,
    name: str,
    heads: int,
    head_dim: int,
    queries: int,
    keys: int,
    relpos_queries: Optional[int] = None,
    relpos_sides: Optional[Tuple[int, int]] = None,
) -> None:
    """QKᵀ + AV for ``queries`` × ``keys`` per head; the decomposed relative position (einsums q·R_h, q·R_w over
    ``relpos_sides`` and the two broadcast bias adds over the logits) for ``relpos_queries`` query rows.
    """
    b.add(f"{name}.attention", "matmul", 2 * heads * queries * keys * head_dim)
    if relpos_sides is not None:
        rq = queries if relpos_queries is None else relpos_queries
        b.add(f"{name}.relpos_einsum", "einsum", heads * rq * sum(relpos_sides) * head_dim)
        b.add(f"{name}.relpos_add", "add", 2 * heads * rq * keys)


# ---------------------------------------------------------------------------------------------------------------
# ViTDet
# ---------------------------------------------------------------------------------------------------------------


class _TransformerShape:
    """Derived sizes shared by the ViTDet and ViViT specs (which define ``grid``, ``embed_dim``, ``num_heads`` and
    ``mlp_ratio``)."""

    grid: Tuple[int, int]
    embed_dim: int
    num_heads: int
    mlp_ratio: float

    @property
    def num_tokens(self) -> int:
        """N = h·w patch tokens (a class token is not included)."""
        h, w = self.grid
        return h * w

    @property
    def head_dim(self) -> int:
        """d = embed_dim / num_heads."""
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden width (3072 for ViT-B)."""
        return int(self.embed_dim * self.mlp_ratio)


@dataclass(frozen=True)
class ViTDetSpec(_TransformerShape):
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


def vitdet_frame_flops(
    spec: ViTDetSpec,
    cfg: Optional[RGTPConfig],
    ftype: FrameType = FrameType.FIRST,
    convention: Union[str, Implementation] = "paper",
) -> FlopBreakdown:
    """Closed-form backbone FLOPs of one ViTDet frame (method.md §5.2).

    Args:
        spec: the backbone shape and canvas.
        cfg: the RGTP settings, or None for the dense baseline (no rollout, no pruning).
        ftype: first / reset / pruned; with ``cfg`` it decides (through :func:`rgtp.selection.is_full_frame`)
            whether the frame is pruned to K = ``cfg.num_keep(N)`` tokens.
        convention: ``paper`` (the official implementation), ``executed`` (ours), or an :class:`Implementation`.

    Full frame: every block on all N tokens (linear, bias, two residual adds), windowed attention on the padded Nw
    queries, global attention N×N, relative position on all blocks, the position-encoding add, and with ``cfg`` the
    rollout (every frame of an RGTP config). Pruned frame: block 0 QKV and attention on N, pruning before its MLP,
    blocks 1.. on K rows, attention of kept queries against all N keys (cached), the rollout and the 3×3 offset
    matching N·9·D; what runs on N rather than K is decided by ``convention``.
    """
    impl = implementation(convention)
    dense = cfg is None or not cfg.enabled
    if dense or is_full_frame(ftype, cfg):
        return _vitdet_frame(spec, None, impl, None if dense else cfg)
    n = spec.num_tokens
    k = cfg.num_keep(n)
    if not 1 <= k <= n:
        raise ValueError(f"invalid RGTP setting keep_tokens={k}: allowed an integer in [1, N={n}]")
    return _vitdet_frame(spec, k, impl, cfg)


def _vitdet_frame(
    spec: ViTDetSpec, k: Optional[int], impl: Implementation, cfg: Optional[RGTPConfig]
) -> FlopBreakdown:
    """The closed form as a sum of named pieces; ``k`` None for a full frame."""
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
        _linear(b, f"{group}.qkv", rows, dim, 3 * dim, spec.qkv_bias)

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
            _attention(b, group, heads, hd, queries, ws * ws, None, (ws, ws) if rel else None)
        else:
            queries = n if q_att is None else q_att
            rel_q = queries if i == 0 else (kk if impl.global_relpos_on_kept else n)
            _attention(b, group, heads, hd, queries, n, rel_q, (h, w) if rel else None)

        # projection and first residual: block 0 on N unless our implementation trims it
        proj_rows = n if (i == 0 and not (impl.block0_proj_on_kept and not full)) else kk
        _linear(b, f"{group}.proj", proj_rows, dim, dim)
        b.add(f"{group}.residual", "add", proj_rows * dim)
        # MLP and second residual: after pruning, K rows
        _linear(b, f"{group}.fc1", kk, dim, hidden)
        _linear(b, f"{group}.fc2", kk, hidden, dim)
        b.add(f"{group}.residual", "add", kk * dim)

    if cfg is not None:
        _vitdet_rollout(b, spec, cfg)
        if not full and cfg.tracking_radius > 0:
            b.add("offset_matching", "matmul", n * (2 * cfg.tracking_radius + 1) ** 2 * dim)
    return b


def schedule_average(full: float, pruned: float, f: float = VID_VAL_FULL_FRAME_FRACTION) -> float:
    """Per-frame average over a split whose full-frame fraction is ``f``: ``f·full + (1−f)·pruned``."""
    return f * full + (1.0 - f) * pruned


def full_frame_fraction(segment_lengths: Iterable[int], reset_period: int = 8) -> float:
    """Fraction of full frames, Σ⌈T/F⌉ / ΣT, over contiguous segments of lengths T (full at t=0 and t%F==0)."""
    if reset_period < 1:
        raise ValueError(f"reset_period={reset_period}: allowed an integer >= 1")
    lengths = [int(t) for t in segment_lengths]
    if any(t < 0 for t in lengths):
        raise ValueError("segment lengths must be >= 0")
    total = sum(lengths)
    if total == 0:
        raise ValueError("segment lengths sum to 0 frames")
    return sum(-(-t // reset_period) for t in lengths) / total


def vitdet_average_flops(
    spec: ViTDetSpec,
    cfg: Optional[RGTPConfig],
    convention: Union[str, Implementation] = "paper",
    f: float = VID_VAL_FULL_FRAME_FRACTION,
) -> float:
    """Per-frame FLOPs averaged over the VID val schedule (f·F + (1−f)·P), as a float; the dense frame for None."""
    full = vitdet_frame_flops(spec, cfg, FrameType.FIRST, convention).total
    if cfg is None or not cfg.enabled:
        return float(full)
    pruned = vitdet_frame_flops(spec, cfg, FrameType.PRUNED, convention).total
    return schedule_average(full, pruned, f)


# ---------------------------------------------------------------------------------------------------------------
# ViViT (factorised encoder)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViViTSpec(_TransformerShape):
    """Shape of a factorised-encoder ViViT and its test protocol (method.md §6.2, §7).

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


def vivit_kept(spec: ViViTSpec, cfg: RGTPConfig, ftype: FrameType) -> int:
    """Kept patch tokens on a frame of this type: N on full frames, the grid pattern on reset frames processed
    with it, and the strided foreground + background count on rollout frames."""
    n = spec.num_tokens
    if is_full_frame(ftype, cfg):
        return n
    if ftype == FrameType.RESET:
        assert cfg.reset_pattern is not None
        return grid_pattern_count(cfg.reset_pattern, spec.grid)
    return num_selected(n, cfg.num_keep(n), cfg.fg_sample_ratio, cfg.bg_sample_ratio)


def _vivit_block(b: FlopBreakdown, spec: ViViTSpec, name: str, rows_in: int, rows_out: int) -> None:
    """One pre-LN block whose attention runs on ``rows_in`` tokens and whose MLP runs on ``rows_out``."""
    dim, heads, hd, hidden = spec.embed_dim, spec.num_heads, spec.head_dim, spec.mlp_hidden
    _linear(b, f"{name}.qkv", rows_in, dim, 3 * dim, spec.qkv_bias)
    _attention(b, name, heads, hd, rows_in, rows_in)
    _linear(b, f"{name}.proj", rows_in, dim, dim)
    b.add(f"{name}.residual", "add", rows_in * dim)
    _linear(b, f"{name}.fc1", rows_out, dim, hidden)
    _linear(b, f"{name}.fc2", rows_out, hidden, dim)
    b.add(f"{name}.residual", "add", rows_out * dim)


def vivit_frame_flops(
    spec: ViViTSpec,
    cfg: Optional[RGTPConfig],
    ftype: FrameType = FrameType.FIRST,
    convention: Union[str, Implementation] = "paper",
) -> FlopBreakdown:
    """Closed-form FLOPs of one spatial-model step (one tubelet of one view) (method.md §5.3).

    Dense: position-encoding add on N+1 tokens and every block on N+1 tokens. With ``cfg``: the forward rollout
    over all blocks ((N+1)³ for block 0, then (K+1)³ per later block); on pruned frames (K kept) block 0 runs
    QKV/attention/projection on N+1 and its MLP on K+1, later blocks on K+1, plus nearest-kept-token matching
    (N−K)·K·d; on rollout (not reset) frames the 3×3 offset matching N·9·D. Both conventions are equal for ViViT
    (pruned tokens are dropped, nothing is wasted); ``convention`` is validated only (the conventions differ only
    by the EPIC noun head, :func:`vivit_temporal_flops`).
    """
    implementation(convention)
    n = spec.num_tokens
    b = FlopBreakdown()
    dense = cfg is None or not cfg.enabled
    k = n if dense else vivit_kept(spec, cfg, ftype)
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
        if ftype == FrameType.PRUNED and cfg.tracking_radius > 0:
            b.add(
                "offset_matching", "matmul", n * (2 * cfg.tracking_radius + 1) ** 2 * spec.embed_dim
            )
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
    _linear(b, "classifier", 1, spec.embed_dim, spec.num_classes)
    if spec.noun_classes > 0:
        _linear(b, "noun_classifier", 1, spec.embed_dim, spec.noun_classes)
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


# ---------------------------------------------------------------------------------------------------------------
# The paper's tables
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's four result tables with the settings that produce it.

    Attributes:
        table: ``vitdet672``, ``vitdet1024``, ``kinetics`` or ``epic``.
        config: the configuration name of the paper (and of our config files).
        published: the paper's number (GFLOPs per frame for ViTDet, TFLOPs per video for ViViT).
        decimals: its printed precision.
        cfg: the RGTP settings (None for the dense baseline).
        kept: K on pruned frames as method.md §3.4 decodes it (None for a baseline).
        official: what the official code gives when run (method.md §5.2 average / §5.3 total), 4 decimals.
        official_full / official_pruned: ViTDet per-frame values of method.md §5.2 (GFLOPs, 4 decimals).
        note: remarks (e.g. a documented mismatch).
    """

    table: str
    config: str
    published: float
    decimals: int
    cfg: Optional[RGTPConfig]
    kept: Optional[int]
    official: Optional[float] = None
    official_full: Optional[float] = None
    official_pruned: Optional[float] = None
    note: str = ""

    @property
    def unit(self) -> str:
        """``G`` (ViTDet, per frame) or ``T`` (ViViT, per video)."""
        return "G" if self.table.startswith("vitdet") else "T"

    @property
    def is_vitdet(self) -> bool:
        """Whether this row is a ViTDet (ImageNet VID) row."""
        return self.table.startswith("vitdet")

    @property
    def spec(self) -> Union[ViTDetSpec, ViViTSpec]:
        """The model shape of the row's table."""
        return {
            "vitdet672": VITDET_B_672,
            "vitdet1024": VITDET_B_1024,
            "kinetics": VIVIT_KINETICS,
            "epic": VIVIT_EPIC,
        }[self.table]

    @property
    def known_mismatch(self) -> bool:
        """The one published number the official code does not reproduce (Kinetics keep_0215, method.md §9.10)."""
        return self.table == "kinetics" and self.config == "keep_0215"


def _vitdet_row(
    size: int,
    name: str,
    published: float,
    ratio: Optional[float],
    kept: Optional[int],
    full: float,
    pruned: Optional[float],
    official: float,
    note: str = "",
) -> PaperRow:
    cfg = None if ratio is None else vitdet_rgtp_config(size, keep_ratio=ratio)
    return PaperRow(f"vitdet{size}", name, published, 1, cfg, kept, official, full, pruned, note)


def _kinetics_cfg(ratio: float) -> RGTPConfig:
    return RGTPConfig(
        keep_ratio=ratio,
        reset_period=8,
        full_on_reset=False,
        reset_pattern="1in2",
        tracking_radius=1,
    )


def _epic_cfg(fg: int, fg_ratio: float, bg_ratio: float, pattern: str) -> RGTPConfig:
    return RGTPConfig(
        keep_ratio=fg / 400,
        fg_sample_ratio=fg_ratio,
        bg_sample_ratio=bg_ratio,
        reset_period=4,
        full_on_reset=False,
        reset_pattern=pattern,
        tracking_radius=1,
    )


_KEEP75 = (
    "method.md §5.2 prints the pruned frame as 33.9159 G from its linear fit with the intercept rounded to "
    "25.828 G; the exact count is 33.915849472 G (528 FLOPs below the rounding boundary); 88.8 is unaffected"
)
_MISMATCH = (
    "the paper prints 1.01; the official code gives 1.0157 T (K=42; K=41 would give 1.0016), "
    "method.md §9.10"
)

#: The 22 published numbers (paper_results.md) with the settings of method.md §3.4 and the official values of §5.
PAPER_ROWS: Tuple[PaperRow, ...] = (
    _vitdet_row(672, "baseline", 174.5, None, None, 174.4954, None, 174.50),
    _vitdet_row(672, "res672_keep768", 93.4, 0.435, 767, 174.8385, 81.6203, 93.42),
    _vitdet_row(672, "res672_keep512", 72.6, 0.29, 512, 174.8385, 57.7750, 72.59),
    _vitdet_row(672, "res672_keep384", 62.1, 0.2177, 384, 174.8385, 45.8056, 62.13),
    _vitdet_row(672, "res672_keep196", 46.8, 0.111, 196, 174.8385, 28.2256, 46.78),
    _vitdet_row(672, "res672_keep64", 36.0, 0.0363, 64, 174.8385, 15.8822, 36.00),
    _vitdet_row(1024, "baseline", 467.4, None, None, 467.4399, None, 467.44),
    _vitdet_row(1024, "res1024_keep2200", 288.9, 0.537, 2200, 467.5070, 263.0731, 288.94),
    _vitdet_row(1024, "res1024_keep1400", 213.7, 0.342, 1401, 467.5070, 176.9100, 213.68),
    _vitdet_row(1024, "res1024_keep750", 152.4, 0.183, 750, 467.5070, 106.7070, 152.36),
    _vitdet_row(1024, "res1024_keep400", 119.1, 0.097, 397, 467.5070, 68.6399, 119.11),
    _vitdet_row(1024, "res1024_keep75", 88.8, 0.0183, 75, 467.5070, 33.9159, 88.78, _KEEP75),
    PaperRow("kinetics", "baseline", 3.36, 2, None, None, 3.3596),
    PaperRow("kinetics", "keep_049", 1.79, 2, _kinetics_cfg(0.49), 96, 1.7888),
    PaperRow("kinetics", "keep_0215", 1.01, 2, _kinetics_cfg(0.215), 42, 1.0157, note=_MISMATCH),
    PaperRow("kinetics", "keep_0066", 0.61, 2, _kinetics_cfg(0.066), 13, 0.6080),
    PaperRow("epic", "baseline", 7.12, 2, None, None, 7.1220),
    PaperRow("epic", "fg_300_bg_025", 5.51, 2, _epic_cfg(300, 1.0, 0.25, "1in2"), 325, 5.5077),
    PaperRow("epic", "fg_180_bg_016", 4.04, 2, _epic_cfg(180, 1.0, 1 / 6, "1in2"), 217, 4.0407),
    PaperRow("epic", "fg_120_bg_005", 2.97, 2, _epic_cfg(120, 1.0, 0.05, "1in2"), 134, 2.9688),
    PaperRow("epic", "fg_160s05_bg_009", 2.25, 2, _epic_cfg(160, 0.5, 0.09, "1in4"), 102, 2.2483),
    PaperRow("epic", "fg_96s05_bg_003", 1.71, 2, _epic_cfg(96, 0.5, 0.03, "1in4"), 58, 1.7056),
    PaperRow("epic", "fg_28s05_bg_00", 1.34, 2, _epic_cfg(56, 0.5, 0.0, "1in4"), 28, 1.3416),
)


def row_kept(row: PaperRow) -> Optional[int]:
    """K on the row's pruned frames, computed from its settings (None for a baseline)."""
    if row.cfg is None:
        return None
    spec = row.spec
    if isinstance(spec, ViTDetSpec):
        return row.cfg.num_keep(spec.num_tokens)
    return vivit_kept(spec, row.cfg, FrameType.PRUNED)


def row_flops(row: PaperRow, convention: Union[str, Implementation] = "paper") -> float:
    """The row's closed-form number in its unit: ViTDet GFLOPs per frame averaged over VID val, ViViT TFLOPs per
    video."""
    spec = row.spec
    if isinstance(spec, ViTDetSpec):
        return vitdet_average_flops(spec, row.cfg, convention) / 1e9
    return vivit_video_flops(spec, row.cfg, convention).total / 1e12


def row_frame_flops(
    row: PaperRow, convention: Union[str, Implementation] = "paper"
) -> Dict[str, int]:
    """ViTDet per-frame closed forms of a row: ``{"full": F}`` and, for RGTP rows, ``"pruned": P`` (FLOPs)."""
    spec = row.spec
    if not isinstance(spec, ViTDetSpec):
        raise ValueError(f"row {row.table}/{row.config} is not a ViTDet row")
    out = {"full": vitdet_frame_flops(spec, row.cfg, FrameType.FIRST, convention).total}
    if row.cfg is not None:
        out["pruned"] = vitdet_frame_flops(spec, row.cfg, FrameType.PRUNED, convention).total
    return out


# ---------------------------------------------------------------------------------------------------------------
# Measuring by execution
# ---------------------------------------------------------------------------------------------------------------


def count(fn: Callable[[], Any]) -> FlopCounter:
    """Run ``fn`` under a fresh :class:`rgtp.counting.FlopCounter` and return the counter."""
    with FlopCounter() as counter:
        fn()
    return counter


def measure(fn: Callable[[], Any]) -> Tuple[int, int]:
    """``(paper_total, executed_total)`` FLOPs of running ``fn`` (e.g. one model forward)."""
    counter = count(fn)
    return counter.paper.total, counter.executed.total


@dataclass
class MeasuredFrame:
    """FLOPs of one frame counted by running the model: totals and per-category tallies of both conventions."""

    t: int
    frame_type: FrameType
    paper: int
    executed: int
    paper_categories: Dict[str, int]
    executed_categories: Dict[str, int]

    @classmethod
    def from_counter(cls, t: int, frame_type: FrameType, counter: FlopCounter) -> "MeasuredFrame":
        """The frame ``t`` of ``frame_type`` as tallied by ``counter``."""
        return cls(
            t,
            FrameType(frame_type),
            counter.paper.total,
            counter.executed.total,
            dict(counter.paper.counts),
            dict(counter.executed.counts),
        )


def build_pruned_vit(
    spec: ViTDetSpec, cfg: Optional[RGTPConfig], device: Union[str, torch.device] = "meta"
):
    """A :class:`rgtp.vit.PrunedViT` of shape ``spec`` (on ``meta`` by default: no memory, shapes only)."""
    from .vit import PrunedViT  # lazy: the model is not needed for the closed forms

    with torch.device(device):
        net = PrunedViT(
            img_size=max(spec.image_hw),
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            qkv_bias=spec.qkv_bias,
            use_abs_pos=spec.use_abs_pos,
            use_rel_pos=spec.use_rel_pos,
            rel_pos_size=spec.rel_pos_size,
            window_size=spec.window_size,
            window_block_indexes=tuple(spec.window_block_indexes),
            rgtp=cfg,
        )
    return net.eval()  # eval: the model memoises its resized position tables (inference only)


def vitdet_frame_flops_measured(
    spec: ViTDetSpec,
    cfg: Optional[RGTPConfig],
    num_frames: Optional[int] = None,
    device: Union[str, torch.device] = "meta",
    net: Any = None,
) -> List[MeasuredFrame]:
    """Count ViTDet backbone FLOPs per frame by running :class:`rgtp.vit.PrunedViT` on ``device``.

    One stream (:class:`rgtp.state.StreamState`) is fed ``num_frames`` frames (default reset_period + 1, so the
    first, the pruned and the first reset frame all occur; 1 for the dense baseline). Each frame is counted
    around the forward and, for RGTP configs, ``update_heatmap`` (where the rollout runs) with all tokens as
    anchors (an empty anchor mask).
    """
    from .state import StreamState

    if net is None:
        net = build_pruned_vit(spec, cfg, device)
    hh, ww = spec.image_hw
    h, w = spec.grid
    x = torch.zeros(1, 3, hh, ww, device=device)
    dense = cfg is None or not cfg.enabled
    if num_frames is None:
        num_frames = 1 if dense else cfg.reset_period + 1
    frames: List[MeasuredFrame] = []
    state = StreamState()
    anchors = torch.zeros(1, h, w, dtype=torch.bool, device=device)
    for t in range(num_frames):
        with torch.inference_mode(), FlopCounter() as counter:
            if dense:
                net(x)
            else:
                net(x, [state])
                net.update_heatmap([state], anchors)
        ftype = FrameType.FIRST if dense else state.frame_type
        frames.append(MeasuredFrame.from_counter(t, ftype, counter))
    return frames


def summarize_measured(frames: Sequence[MeasuredFrame]) -> Dict[str, MeasuredFrame]:
    """The first measured frame of each type, keyed ``first`` / ``reset`` / ``pruned``; raises if two frames of
    the same type were counted differently (a count that depends on history would be a bug)."""
    out: Dict[str, MeasuredFrame] = {}
    for fr in frames:
        key = fr.frame_type.value
        if key in out:
            ref = out[key]
            if (ref.paper, ref.executed) != (fr.paper, fr.executed):
                raise AssertionError(
                    f"frame t={fr.t} ({key}) counts {fr.paper}/{fr.executed} FLOPs (paper/executed), "
                    f"frame t={ref.t} of the same type {ref.paper}/{ref.executed}"
                )
        else:
            out[key] = fr
    return out


def vivit_frame_flops_measured(
    spec: ViViTSpec,
    cfg: Optional[RGTPConfig],
    num_steps: Optional[int] = None,
    batch: int = 1,
    device: Union[str, torch.device] = "meta",
) -> List[MeasuredFrame]:
    """Count the spatial model's FLOPs per tubelet step by running :class:`rgtp.cls_vit.ClsViT` on ``device``.

    One batch of ``batch`` views is fed ``num_steps`` steps (default ``spec.num_steps``, one whole view). Counts
    are for the whole batch (``batch`` × the per-view count). The temporal model and classifier are not part of
    this model; :func:`vivit_temporal_flops` gives them.
    """
    from .cls_vit import ClsViT  # lazy: the model is not needed for the closed forms

    with torch.device(device):
        net = ClsViT(
            spec.grid,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            qkv_bias=spec.qkv_bias,
            rgtp=cfg,
        ).eval()
    emb = torch.zeros(batch, spec.num_tokens, spec.embed_dim, device=device)
    state = net.new_state()
    frames: List[MeasuredFrame] = []
    for t in range(spec.num_steps if num_steps is None else num_steps):
        with torch.inference_mode(), FlopCounter() as counter:
            net(emb, state)
        ftype = state.frame_type if state.frame_type is not None else FrameType.FIRST
        frames.append(MeasuredFrame.from_counter(t, ftype, counter))
    return frames


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


def vivit_temporal_flops_measured(
    spec: ViViTSpec, device: Union[str, torch.device] = "meta"
) -> Tuple[int, int]:
    """``(paper, executed)`` FLOPs of the temporal model (a dense :class:`rgtp.cls_vit.ClsViT` over the
    ``num_steps`` class features, as the ViViT recogniser builds it) plus the classifier of one view, counted by
    running them on ``device``, with the noun head (``spec.noun_classes``) when present.
    """
    from . import counting
    from .cls_vit import ClsViT

    with torch.device(device):
        temporal = ClsViT(
            (spec.num_steps, 1),
            embed_dim=spec.embed_dim,
            depth=spec.temporal_depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            qkv_bias=spec.qkv_bias,
        ).eval()
        classifier = torch.nn.Linear(spec.embed_dim, spec.num_classes)
        nouns = (
            torch.nn.Linear(spec.embed_dim, spec.noun_classes) if spec.noun_classes > 0 else None
        )
    feats = torch.zeros(1, spec.num_steps, spec.embed_dim, device=device)
    with torch.inference_mode(), FlopCounter() as counter:
        z = temporal(feats)
        counting.linear(z, classifier)
        if nouns is not None:
            counting.linear(z, nouns)
    return counter.paper.total, counter.executed.total
