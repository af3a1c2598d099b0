"""Everything one video stream carries between frames (docs/method.md §1), with ``reset()``.

A :class:`StreamState` belongs to one video. Several states can be processed side by side (a batch of streams, one
frame each): the model stacks their tensors for the frame and hands each state a view of the result, so state never
leaks between streams. Tensors are stored without a batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .selection import FrameType


@dataclass
class StreamState:
    """The state of one video stream.

    Attributes:
        t: index of the last processed frame (−1 before the first frame).
        heatmap: ``(N,)`` rollout importance of the last frame, used to select tokens on the next one.
        embed: ``(N, C)`` raw patch embeddings of the last frame (the tracking descriptor).
        qkv: per block ``(N, 3C)``: each token's QKV from the last frame on which it was computed.
        output: ``(N, C)`` backbone output cache that rebuilds the dense map on pruned frames.
        attn: per rollout block, the fused attention buffer (``(N, N)``, or pooled ``(N/4, N/4)``).
        frame_type: the type of the last processed frame.
        kept: ``(K,)`` raster-sorted kept indices of the last frame, or None on a full frame.
        grid: the token grid ``(h, w)`` of the last frame.
        pending: attention summaries of the last frame, consumed by the rollout update.
        generator: the random generator of the random-selection baseline.
        reset_cause: why the last frame was a reset frame: ``period`` (the schedule) or ``cut`` (a shot cut,
            ``cut_threshold``); None on other frames.
        match_quality: the last frame's match quality against the frame before (:func:`rgtp.tracking.
            match_quality`) when the cut check ran, else None.
        computed_embed: ``(N, C)`` each token's raw patch embedding on the last frame it was computed (the
            ``change`` selection).
    """

    t: int = -1
    heatmap: Optional[Tensor] = None
    embed: Optional[Tensor] = None
    qkv: Dict[int, Tensor] = field(default_factory=dict)
    output: Optional[Tensor] = None
    attn: Dict[int, Tensor] = field(default_factory=dict)
    frame_type: Optional[FrameType] = None
    kept: Optional[Tensor] = None
    grid: Optional[Tuple[int, int]] = None
    pending: Dict[int, Tensor] = field(default_factory=dict)
    generator: Optional[torch.Generator] = None
    reset_cause: Optional[str] = None
    match_quality: Optional[float] = None
    computed_embed: Optional[Tensor] = None

    def reset(self) -> None:
        """Forget everything: the next frame is the first frame of a new video."""
        self.t = -1
        self.heatmap = None
        self.embed = None
        self.qkv = {}
        self.output = None
        self.attn = {}
        self.frame_type = None
        self.kept = None
        self.grid = None
        self.pending = {}
        self.generator = None
        self.reset_cause = None
        self.match_quality = None
        self.computed_embed = None

    @property
    def num_tokens(self) -> int:
        """N of the last frame's grid."""
        assert self.grid is not None, "no frame processed yet"
        return self.grid[0] * self.grid[1]

    def cache_bytes(self) -> int:
        """Bytes held by this stream's caches and buffers."""
        tensors: List[Tensor] = [*self.qkv.values(), *self.attn.values()]
        extra = (self.heatmap, self.embed, self.output, self.computed_embed)
        tensors += [t for t in extra if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


def stack_rows(tensors: Sequence[Tensor]) -> Tensor:
    """Stack per-stream tensors into a batch, without a copy when they already are the rows of one batch tensor
    (as they are after the model handed out views of a batched result)."""
    first = tensors[0]
    base = first._base
    if (
        base is not None
        and base.dim() == first.dim() + 1
        and base.shape[0] == len(tensors)
        and base.shape[1:] == first.shape
        and all(
            t._base is base and t.data_ptr() == base[i].data_ptr() for i, t in enumerate(tensors)
        )
    ):
        return base
    if len(tensors) == 1:
        return first.unsqueeze(0)
    return torch.stack(list(tensors))


def unstack_rows(batch: Tensor) -> List[Tensor]:
    """Views of the rows of a batch tensor, one per stream."""
    return list(batch.unbind(0))
