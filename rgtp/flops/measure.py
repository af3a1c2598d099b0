"""Counting FLOPs by executing the models (on the ``meta`` device by default: shapes only, no memory).

The models are imported lazily: :mod:`rgtp.vit` for ViTDet, :mod:`rgtp.cls_vit` for ViViT, :mod:`rgtp.state` for
the stream state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..config import RGTPConfig
from ..counting import FlopCounter
from ..selection import FrameType
from .vitdet import ViTDetSpec
from .vivit import ViViTSpec


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
    spec: ViTDetSpec,
    cfg: Optional[RGTPConfig],
    device: Union[str, torch.device] = "meta",
    window_kept_only: Optional[bool] = None,
) -> Any:
    """A :class:`rgtp.vit.PrunedViT` of shape ``spec`` (on ``meta`` by default: no memory, shapes only).

    ``window_kept_only`` is passed to the model (None: its device default, see
    ``PrunedViT.uses_window_kept_only``); its executed count follows
    ``executed_convention(net.uses_window_kept_only(device))``.
    """
    from ..vit import PrunedViT  # lazy: the model is not needed for the closed forms

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
            window_kept_only=window_kept_only,
        )
    return net.eval()  # eval: the model memoises its resized position tables (inference only)


def vitdet_frame_flops_measured(
    spec: ViTDetSpec,
    cfg: Optional[RGTPConfig],
    num_frames: Optional[int] = None,
    device: Union[str, torch.device] = "meta",
    net: Any = None,
    window_kept_only: Optional[bool] = None,
) -> List[MeasuredFrame]:
    """Count ViTDet backbone FLOPs per frame by running :class:`rgtp.vit.PrunedViT` on ``device``.

    One stream (:class:`rgtp.state.StreamState`) is fed ``num_frames`` frames (default reset_period + 1, so the
    first, the pruned and the first reset frame all occur; 1 for the dense baseline). Each frame is counted
    around the forward and, for RGTP configs, ``update_heatmap`` (where the rollout runs) with all tokens as
    anchors (an empty anchor mask). ``net`` reuses a model (e.g. from :func:`build_pruned_vit`); otherwise one is
    built with ``window_kept_only`` (which must then be None: set it on the model you pass).
    """
    from ..state import StreamState

    if net is None:
        net = build_pruned_vit(spec, cfg, device, window_kept_only)
    elif window_kept_only is not None:
        raise ValueError(
            "window_kept_only applies to the model built here; set it on the net passed"
        )
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
    this model; :func:`rgtp.flops.vivit_temporal_flops` gives them.
    """
    from ..cls_vit import ClsViT  # lazy: the model is not needed for the closed forms

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


def vivit_temporal_flops_measured(
    spec: ViViTSpec, device: Union[str, torch.device] = "meta"
) -> Tuple[int, int]:
    """``(paper, executed)`` FLOPs of the temporal model (a dense :class:`rgtp.cls_vit.ClsViT` over the
    ``num_steps`` class features, as the ViViT recogniser builds it) plus the classifier of one view, counted by
    running them on ``device``, with the noun head (``spec.noun_classes``) when present.
    """
    from .. import counting
    from ..cls_vit import ClsViT

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
