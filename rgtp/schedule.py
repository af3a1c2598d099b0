"""The frame schedule of a batch of streams: first, periodic reset and pruned frames, and resets at shot cuts.

Periodic resets follow the frame index alone (:func:`rgtp.selection.frame_type`). With ``cut_threshold`` set, a
pruned frame whose match quality against the previous frame (:func:`rgtp.tracking.match_quality`, computed from the
tracking step's similarities) falls below the threshold becomes a reset frame with cause ``cut``. The check reads
one number per stream on the host; the tracking sources it computed are reused by the selection.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from torch import Tensor

from .config import RGTPConfig
from .selection import FrameType, frame_type
from .state import StreamState, stack_rows
from .tracking import match_previous, match_quality

#: How a stream's frame runs: every token, the reset grid pattern, or the tokens chosen by the selection.
FULL, PATTERN, SELECT = "full", "pattern", "select"


def advance_streams(
    states: Sequence[StreamState], grid: Tuple[int, int], emb: Tensor, cfg: RGTPConfig
) -> Tuple[Dict[str, List[int]], Dict[int, Tensor]]:
    """Advance every stream by one frame of raw patch embeddings ``emb`` (B, N, C) on ``grid``.

    Sets each state's ``t``, ``frame_type``, ``reset_cause``, ``match_quality`` and ``grid``. Returns the stream
    indices per kind of frame (:data:`FULL`, :data:`PATTERN`, :data:`SELECT`) and, for streams the cut check
    tracked, the tracking sources ``(N,)`` (index of each token's best match in the previous frame).
    """
    kinds: List[str] = []
    for i, s in enumerate(states):
        if s.grid is not None and s.grid != grid:
            raise ValueError(
                f"stream {i} changed its token grid from {s.grid} to {grid} without reset()"
            )
        s.t += 1
        s.frame_type = frame_type(s.t, cfg.reset_period)
        s.grid = grid
        s.reset_cause = "period" if s.frame_type == FrameType.RESET else None
        s.match_quality = None
        kinds.append(_kind(s.frame_type, cfg))
    sources: Dict[int, Tensor] = {}
    checked = [i for i, k in enumerate(kinds) if k == SELECT and cfg.cut_threshold is not None]
    if checked:
        prev = stack_rows([states[i].embed for i in checked])
        cur = emb[checked]
        src, sim = match_previous(cur, prev, grid, cfg.tracking_radius, cfg.tracking_border)
        # the one host read of the cut check: the frame kind decides the shapes of all that follows
        quality = match_quality(cur, prev, src, sim).tolist()
        for i, q, row in zip(checked, quality, src):
            s = states[i]
            s.match_quality = float(q)
            if q < cfg.cut_threshold:
                s.frame_type, s.reset_cause = FrameType.RESET, "cut"
                kinds[i] = _kind(FrameType.RESET, cfg)
            else:
                sources[i] = row
    groups: Dict[str, List[int]] = {}
    for i, k in enumerate(kinds):
        groups.setdefault(k, []).append(i)
    return groups, sources


def _kind(ftype: FrameType, cfg: RGTPConfig) -> str:
    if not cfg.enabled or ftype == FrameType.FIRST:
        return FULL
    if ftype == FrameType.RESET:
        return FULL if cfg.full_on_reset else PATTERN
    return SELECT


def tracked_sources(sources: Dict[int, Tensor], idx: Sequence[int]) -> Optional[Tensor]:
    """The tracking sources of the streams ``idx`` stacked (B, N), when the cut check computed all of them."""
    if idx and all(i in sources for i in idx):
        return stack_rows([sources[i] for i in idx])
    return None
