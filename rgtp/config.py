"""One validated dataclass of RGTP settings that both projects translate their configs into."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

HEAD_FUSIONS = ("rms", "mean", "max")
ROLLOUT_MODES = ("forward", "backward")
GRID_PATTERNS = ("1in2", "1in4")
SELECTIONS = ("rollout", "random", "change")
REL_POS_INTERPS = ("paper", "detectron2")
#: Order among exactly tied scores at rank K: "low" = lower index first, "high" = higher index first.
TIE_BREAKS = ("low", "high")
#: Out-of-grid tracking candidates: "exclude" = never win; "official" = similarity -100, source token 0.
TRACKING_BORDERS = ("exclude", "official")
#: The behaviour presets (docs/method.md §10.2, §11).
BEHAVIOURS = ("clean", "official")
#: What each preset sets for the quirk fields left at ``None`` (an explicit value always wins).
BEHAVIOUR_PRESETS = {
    "clean": {"tie_break": "low", "tracking_border": "exclude"},
    "official": {"tie_break": "high", "tracking_border": "official"},
}


class ConfigError(ValueError):
    """An RGTP setting is invalid; the message names the key, the value and what is allowed.

    Raised by :func:`_fail` it also carries them as ``key`` (the :class:`RGTPConfig` field), ``value`` and
    ``allowed``, so that :mod:`rgtp.config_table` can re-raise it under a framework's key name.
    """

    def __init__(
        self, message: str, key: Optional[str] = None, value: object = None, allowed: str = ""
    ) -> None:
        super().__init__(message)
        self.key, self.value, self.allowed = key, value, allowed


def _fail(key: str, value: object, allowed: str) -> None:
    raise ConfigError(
        f"invalid RGTP setting {key}={value!r}: allowed {allowed}", key, value, allowed
    )


@dataclass
class RGTPConfig:
    """Settings of Rollout-Guided Token Pruning (docs/method.md §1-§4; every field: §10.1).

    Attributes:
        enabled: prune at all; when False every frame is processed densely (no token is pruned).
        keep_tokens: K, the number of tokens kept on pruned frames (ViTDet: top-K; ViViT: foreground count before
            ``fg_sample_ratio`` subsampling). ``None`` means use ``keep_ratio``.
        keep_ratio: r with K = round(r·N), used when ``keep_tokens`` is None.
        fg_sample_ratio: keep every round(1/ratio)-th foreground token in descending-score order (1.0 = all).
        bg_sample_ratio: keep every round(1/ratio)-th remaining token in raster order (0.0 = none).
        reset_period: F; frames with t > 0 and t % F == 0 are reset frames.
        full_on_reset: reset frames are processed fully (ViTDet) instead of with ``reset_pattern`` (ViViT).
        reset_pattern: the grid pattern used on reset frames when ``full_on_reset`` is False.
        first_frame_full: the first frame of each stream is processed without pruning.
        rollout_blocks: block indices whose attention enters the rollout; ``None`` = the model's default (the
            global blocks for ViTDet, all blocks for ViViT).
        head_fusion: how heads are fused: root mean square (the paper), mean or max.
        rollout_pool: 1, or 2 for the 2×2-pooled forward rollout used at 672.
        rollout_mode: forward (matrix product) or backward (mat-vec from the anchor vector).
        tracking_radius: the radius of the local backward warp (1 = 3×3 neighbourhood; 0 disables tracking).
        rel_pos_interp: how relative-position tables are resized: ``paper`` (bicubic 2-D) or ``detectron2``.
        selection: ``rollout`` (the method), ``random`` (a seeded baseline with the same K) or ``change`` (an
            Eventful-style baseline: the K tokens whose patch embedding moved most, in L2 norm, since the frame on
            which they were last computed; docs/method.md).
        seed: seed of the random baseline.
        cut_threshold: reset at shot cuts: a pruned frame whose match quality (the mean over tokens of the cosine
            similarity of each token's best tracking match in the previous frame) is below this value is processed
            as a reset frame (cause ``cut``). ``None`` (default, and the paper's configs) = periodic resets only.
        behaviour: the preset of the quirk fields below: ``clean`` (this project's rules) or ``official`` (the
            official code's, to reproduce its numbers exactly; docs/method.md §11).
        tie_break: order among exactly tied scores at rank K in the top-K: ``low`` (lower index first; clean) or
            ``high`` (higher index first; official). ``None`` = from ``behaviour``.
        tracking_border: out-of-grid candidates of the tracking warp: ``exclude`` (never win; clean) or
            ``official`` (similarity −100, so they win when every in-grid similarity is below −100, and the token
            then takes the heatmap value of token 0). ``None`` = from ``behaviour``.

    The preset sets defaults and an explicit field wins: every quirk field left at ``None`` is filled from
    :data:`BEHAVIOUR_PRESETS` ``[behaviour]`` when the config is built, so ``RGTPConfig(behaviour="official",
    tie_break="low")`` is the official behaviour with one quirk switched back. After construction the fields hold
    the resolved values. :meth:`replace` with a new ``behaviour`` re-derives every quirk field not given in the same
    call.
    """

    enabled: bool = True
    keep_tokens: Optional[int] = None
    keep_ratio: Optional[float] = None
    fg_sample_ratio: float = 1.0
    bg_sample_ratio: float = 0.0
    reset_period: int = 8
    full_on_reset: bool = True
    reset_pattern: Optional[str] = None
    first_frame_full: bool = True
    rollout_blocks: Optional[Sequence[int]] = None
    head_fusion: str = "rms"
    rollout_pool: int = 1
    rollout_mode: str = "forward"
    tracking_radius: int = 1
    rel_pos_interp: str = "paper"
    selection: str = "rollout"
    seed: int = 0
    behaviour: str = "clean"
    tie_break: Optional[str] = None
    tracking_border: Optional[str] = None
    cut_threshold: Optional[float] = None

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            _fail("behaviour", self.behaviour, f"one of {BEHAVIOURS}")
        for name, value in BEHAVIOUR_PRESETS[self.behaviour].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.validate()

    def replace(self, **changes: object) -> "RGTPConfig":
        """A validated copy with some fields changed; a new ``behaviour`` re-derives the quirk fields that are not
        in ``changes``."""
        if "behaviour" in changes:
            for name in BEHAVIOUR_PRESETS["clean"]:
                changes.setdefault(name, None)
        return dataclasses.replace(self, **changes)

    def validate(self, num_tokens: Optional[int] = None) -> None:
        """Raise :class:`ConfigError` for any invalid setting; with ``num_tokens`` also check K against N."""
        if self.keep_tokens is not None and self.keep_ratio is not None:
            _fail("keep_tokens", self.keep_tokens, "only one of keep_tokens and keep_ratio")
        if self.keep_ratio is not None and not (0.0 < self.keep_ratio <= 1.0):
            _fail("keep_ratio", self.keep_ratio, "a ratio in (0, 1]")
        if self.keep_tokens is not None and self.keep_tokens < 1:
            _fail("keep_tokens", self.keep_tokens, "an integer >= 1")
        if not (0.0 < self.fg_sample_ratio <= 1.0):
            _fail("fg_sample_ratio", self.fg_sample_ratio, "a ratio in (0, 1]")
        if not (0.0 <= self.bg_sample_ratio <= 1.0):
            _fail("bg_sample_ratio", self.bg_sample_ratio, "a ratio in [0, 1]")
        if self.reset_period < 1:
            _fail("reset_period", self.reset_period, "an integer >= 1")
        if self.reset_pattern is not None and self.reset_pattern not in GRID_PATTERNS:
            _fail("reset_pattern", self.reset_pattern, f"one of {GRID_PATTERNS} or None")
        if not self.full_on_reset and self.reset_pattern is None and self.enabled:
            _fail("reset_pattern", None, f"one of {GRID_PATTERNS} when full_on_reset is False")
        if self.head_fusion not in HEAD_FUSIONS:
            _fail("head_fusion", self.head_fusion, f"one of {HEAD_FUSIONS}")
        if self.rollout_pool not in (1, 2):
            _fail("rollout_pool", self.rollout_pool, "1 or 2")
        if self.rollout_mode not in ROLLOUT_MODES:
            _fail("rollout_mode", self.rollout_mode, f"one of {ROLLOUT_MODES}")
        if self.rollout_mode == "backward" and self.rollout_pool != 1:
            _fail("rollout_pool", self.rollout_pool, "1 with rollout_mode='backward'")
        if self.tracking_radius < 0:
            _fail("tracking_radius", self.tracking_radius, "an integer >= 0")
        if self.rel_pos_interp not in REL_POS_INTERPS:
            _fail("rel_pos_interp", self.rel_pos_interp, f"one of {REL_POS_INTERPS}")
        if self.cut_threshold is not None and not (-1.0 < self.cut_threshold <= 1.0):
            _fail(
                "cut_threshold", self.cut_threshold, "a cosine similarity in (-1, 1] (None = off)"
            )
        if self.selection not in SELECTIONS:
            _fail("selection", self.selection, f"one of {SELECTIONS}")
        if self.behaviour not in BEHAVIOURS:
            _fail("behaviour", self.behaviour, f"one of {BEHAVIOURS}")
        if self.tie_break not in TIE_BREAKS:
            _fail("tie_break", self.tie_break, f"one of {TIE_BREAKS} (None = from behaviour)")
        if self.tracking_border not in TRACKING_BORDERS:
            _fail(
                "tracking_border",
                self.tracking_border,
                f"one of {TRACKING_BORDERS} (None = from behaviour)",
            )
        if num_tokens is not None and self.enabled:
            k = self.num_keep(num_tokens)
            if not (1 <= k <= num_tokens) and self.keep_tokens is not None:
                _fail("keep_tokens", k, f"an integer in [1, N={num_tokens}]")
            if not (1 <= k <= num_tokens):
                _fail(
                    "keep_ratio",
                    self.keep_ratio,
                    f"a ratio with round(ratio*N) >= 1 (N={num_tokens})",
                )

    def num_keep(self, num_tokens: int) -> int:
        """K for a grid of N tokens: ``keep_tokens``, else round(keep_ratio·N), else N (keep all)."""
        if self.keep_tokens is not None:
            return int(self.keep_tokens)
        if self.keep_ratio is not None:
            return int(round(self.keep_ratio * num_tokens))
        return num_tokens

    def check_supported(self, model: str, **allowed: Sequence[object]) -> None:
        """Raise :class:`ConfigError` when a field holds a value that ``model`` does not implement: each keyword
        names a field and the values the model honours (a model rejects what it would otherwise ignore).
        """
        for key, values in allowed.items():
            value = getattr(self, key)
            if value not in values:
                _fail(key, value, f"{' or '.join(repr(v) for v in values)} in {model}")
