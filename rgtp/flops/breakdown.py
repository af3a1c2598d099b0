"""What a FLOP count is made of: named terms (:class:`FlopBreakdown`), the two conventions every count is given
in (``paper`` and ``executed``, told apart by an :class:`Implementation`), and the pieces both closed forms are
built of (linear layers, attention, the transformer's derived sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

from ..config import RGTPConfig
from ..counting import CATEGORIES
from ..selection import FrameType

#: The two conventions every count is given in (see :class:`Implementation`).
CONVENTIONS = ("paper", "executed")


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


@dataclass(frozen=True)
class Implementation:
    """Which parts of the official implementation's wasted work on ViTDet pruned frames are skipped.

    Every flag False is the official implementation (the ``paper`` convention, :data:`PAPER`). Our model
    (:class:`rgtp.vit.PrunedViT`) executes :func:`executed_convention` of its windowed-attention path: with
    kept-query windows (:data:`EXECUTED`) or without (:data:`EXECUTED_DENSE_WINDOWS`). When the model skips more
    or less work, change those constants; the tests compare them with the measured count to the MAC.

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
#: What :class:`rgtp.vit.PrunedViT` executes on pruned frames with kept-query windowed attention on
#: (``window_kept_only=True``; the default ``None`` on every device but CUDA, e.g. CPU and ``meta``).
EXECUTED = Implementation(
    block0_proj_on_kept=True, global_relpos_on_kept=True, windowed_attention_on_kept=True
)
#: What :class:`rgtp.vit.PrunedViT` executes with kept-query windowed attention off (``window_kept_only=False``;
#: the default ``None`` on CUDA): every window from the cache for all of its queries, then the kept rows.
EXECUTED_DENSE_WINDOWS = Implementation(block0_proj_on_kept=True, global_relpos_on_kept=True)


def executed_convention(window_kept_only: bool = True) -> Implementation:
    """The ``executed`` closed form of our ViTDet for its windowed-attention path.

    Args:
        window_kept_only: whether pruned frames take the kept-query windowed attention, as
            ``PrunedViT.uses_window_kept_only(device)`` says for the device the model runs on (True on CPU and
            ``meta`` by default, False on CUDA by default).

    Returns:
        :data:`EXECUTED` when on, :data:`EXECUTED_DENSE_WINDOWS` when off.
    """
    return EXECUTED if window_kept_only else EXECUTED_DENSE_WINDOWS


def implementation(convention: Union[str, Implementation]) -> Implementation:
    """The :class:`Implementation` of a convention name (``paper``, or ``executed`` = :data:`EXECUTED`), or the
    argument itself."""
    if isinstance(convention, Implementation):
        return convention
    if convention == "paper":
        return PAPER
    if convention == "executed":
        return EXECUTED
    raise ValueError(f"unknown FLOP convention {convention!r}: allowed {CONVENTIONS}")


class TransformerShape:
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


def add_linear(
    b: FlopBreakdown, name: str, rows: int, d_in: int, d_out: int, bias: bool = True
) -> None:
    """A linear layer on ``rows`` rows: rows·d_in·d_out MACs (``linear``) and, with ``bias``, rows·d_out adds."""
    b.add(f"{name}.linear", "linear", rows * d_in * d_out)
    if bias:
        b.add(f"{name}.bias", "bias", rows * d_out)


def add_attention(
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
    ``relpos_sides`` and the two broadcast bias adds over the logits) for ``relpos_queries`` query rows (default
    all ``queries``)."""
    b.add(f"{name}.attention", "matmul", 2 * heads * queries * keys * head_dim)
    if relpos_sides is not None:
        rq = queries if relpos_queries is None else relpos_queries
        b.add(f"{name}.relpos_einsum", "einsum", heads * rq * sum(relpos_sides) * head_dim)
        b.add(f"{name}.relpos_add", "add", 2 * heads * rq * keys)


def add_selection_terms(
    b: FlopBreakdown, cfg: RGTPConfig, ftype: FrameType, num_tokens: int, dim: int
) -> None:
    """What choosing the kept tokens of a pruned frame costs beyond the rollout (both models, both conventions).

    * ``cut_threshold`` set: the cut check matches every token in the previous frame, N·(2r+1)²·D
      (``offset_matching``, whatever the selection; the rollout selection reuses it instead of warping again), and
      measures the match quality, 2·N·D (``cut_check``). A frame the check turns into a reset (a cut) costs the
      reset frame plus these two terms.
    * otherwise the rollout selection with ``tracking_radius`` r > 0 warps the heatmap: N·(2r+1)²·D.
    * ``selection="change"`` scores the tokens by their embedding change: N·D adds and N·D MACs.

    Random selection warps nothing. Reset and first frames run no selection.
    """
    if ftype != FrameType.PRUNED:
        return
    n, r = num_tokens, cfg.tracking_radius
    if cfg.cut_threshold is not None:
        b.add("offset_matching", "matmul", n * (2 * r + 1) ** 2 * dim)
        b.add("cut_check", "matmul", 2 * n * dim)
    elif cfg.selection == "rollout" and r > 0:
        b.add("offset_matching", "matmul", n * (2 * r + 1) ** 2 * dim)
    if cfg.selection == "change":
        b.add("change_scores.add", "add", n * dim)
        b.add("change_scores", "matmul", n * dim)
