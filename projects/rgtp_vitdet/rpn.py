"""Proposals of a batch of video frames with the RPN head's convolutions recomputed only where the pyramid changed.

:class:`StreamingRPN` wraps detectron2's ``RPN`` (its ``StandardRPNHead``: k×k convolutions, then 1×1 objectness
and box-delta convolutions, shared over the levels) without owning parameters. Per stream and level it caches the
head's two outputs; on a frame whose pyramid reports changed regions
(:meth:`rgtp_vitdet.backbone.StreamingFeaturePyramid.changed_regions`), the changed outputs are covered with
rectangles (:mod:`rgtp_vitdet.regions`) and the convolutions run on each rectangle in sequence, every one on the
rectangle grown by the halo the later ones read (so no hidden map is kept between frames); the rest is the previous
frame's. Anchors, box decoding, top-k and NMS are detectron2's, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch.nn.functional as F
from detectron2.modeling.proposal_generator.rpn import RPN, StandardRPNHead
from detectron2.structures import ImageList, Instances
from torch import Tensor, nn

from rgtp.state import StreamState

from .regions import (
    DENSE_ABOVE,
    TILE,
    CachedHeadPart,
    cache_key,
    charge_head,
    conv_macs,
    dilate,
    is_spatial_conv,
    module_macs,
    rects,
    run_on_rects,
)

__all__ = ["StreamingRPN"]


def _grown(rect: Tuple[int, int, int, int], r: int, h: int, w: int) -> Tuple[int, int, int, int]:
    """``rect`` (y0, y1, x0, x1) grown by ``r`` pixels on each side, clamped to an ``h``×``w`` map."""
    y0, y1, x0, x1 = rect
    return max(y0 - r, 0), min(y1 + r, h), max(x0 - r, 0), min(x1 + r, w)


@dataclass
class _LevelCache:
    logits: Tensor  # (A, H, W)
    deltas: Tensor  # (A·box_dim, H, W)


@dataclass
class _Entry:
    t: int
    key: Tuple[Any, ...]
    levels: Dict[str, _LevelCache]


class StreamingRPN(CachedHeadPart):
    """Proposals of ``rpn`` (a detectron2 ``RPN`` with a ``StandardRPNHead``) for frames of streams.

    Args:
        rpn: the model's proposal generator (parameters stay there).
        pyramid: the backbone that reports changed regions (``changed_regions(states)``), or None.
        enabled: reuse the previous frame's head outputs outside the changed regions; False runs ``rpn`` as is.
    """

    slot = "rpn"

    def __init__(self, rpn: nn.Module, pyramid: Optional[nn.Module], enabled: bool = True) -> None:
        self.rpn = rpn
        super().__init__(rpn, pyramid, enabled)

    @classmethod
    def supported(cls, rpn: nn.Module, pyramid: Optional[nn.Module]) -> bool:
        """Whether ``rpn`` and ``pyramid`` have the structure the incremental path recomputes."""
        if not isinstance(rpn, RPN) or not isinstance(rpn.rpn_head, StandardRPNHead):
            return False
        if not cls.reports_changes(pyramid):
            return False
        head = rpn.rpn_head
        convs = list(head.conv) if isinstance(head.conv, nn.Sequential) else [head.conv]
        heads = (head.objectness_logits, head.anchor_deltas)
        return all(is_spatial_conv(c) for c in convs) and all(
            isinstance(c, nn.Conv2d) and tuple(c.kernel_size) == (1, 1) for c in heads
        )

    def proposals(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        states: Optional[Sequence[StreamState]] = None,
    ) -> List[Instances]:
        """``rpn(images, features)``'s proposals (inference), the head outputs reused where nothing changed."""
        rpn = self.rpn
        if not self.enabled or states is None or rpn.training:
            feats = [features[f] for f in rpn.in_features]
            macs = self._dense_macs(feats)
            charge_head(executed=macs, dense=macs)
            return rpn(images, features, None)[0]
        feats = [features[f] for f in rpn.in_features]
        anchors = rpn.anchor_generator(feats)
        logits, deltas = self.head(feats, states)
        box_dim = rpn.anchor_generator.box_dim
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        deltas = [
            x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1])
            .permute(0, 3, 4, 1, 2)
            .flatten(1, -2)
            for x in deltas
        ]
        return rpn.predict_proposals(anchors, logits, deltas, images.image_sizes)

    # ------------------------------------------------------------------------------------------------ head
    def head(
        self, feats: List[Tensor], states: Sequence[StreamState]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """The head's per-level objectness logits (B, A, H, W) and deltas (B, A·box_dim, H, W)."""
        head = self.rpn.rpn_head
        convs = list(head.conv) if isinstance(head.conv, nn.Sequential) else [head.conv]
        names = list(self.rpn.in_features)
        assert self.pyramid is not None
        changes = self.pyramid.changed_regions(states)
        key = cache_key(head, feats)
        charge_head(dense=self._dense_macs(feats))
        inc = []
        for i, s in enumerate(states):
            e = self._caches.get(s, "rpn")
            ch = changes[i]
            if (
                e is not None
                and ch is not None
                and e.t == s.t - 1
                and e.key == key
                and all(ch.get(n) is not None for n in names)
            ):
                inc.append(i)
            else:
                self._caches.pop(s, "rpn")  # refilled below: release it first
        dense = [i for i in range(len(states)) if i not in inc]
        levels: Dict[int, Dict[str, _LevelCache]] = {i: {} for i in range(len(states))}
        out_logits, out_deltas = [], []
        for name, x in zip(names, feats):
            b = x.shape[0]
            if not inc:
                lg, dl = self._dense_level(convs, head, x)
                for i in range(b):
                    levels[i][name] = _LevelCache(lg[i], dl[i])
                out_logits.append(lg)
                out_deltas.append(dl)
                continue
            olds = [self._caches.get(states[i], "rpn").levels[name] for i in inc]
            lg = olds[0].logits.new_empty((b, *olds[0].logits.shape))
            dl = olds[0].deltas.new_empty((b, *olds[0].deltas.shape))
            if dense:
                lg_d, dl_d = self._dense_level(convs, head, x[dense])
                lg[dense], dl[dense] = lg_d.to(lg.dtype), dl_d.to(dl.dtype)
                for i in dense:
                    levels[i][name] = _LevelCache(lg[i], dl[i])
            masks = [changes[i][name] for i in inc]  # type: ignore[index]
            self._level_incremental(convs, head, x, inc, olds, masks, lg, dl)
            for i in inc:
                levels[i][name] = _LevelCache(lg[i], dl[i])
            out_logits.append(lg)
            out_deltas.append(dl)
        for i, s in enumerate(states):
            self._caches.set(s, "rpn", _Entry(s.t, key, levels[i]))
        return out_logits, out_deltas

    def _dense_level(
        self, convs: List[nn.Module], head: nn.Module, x: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """The stock head on one level: the same modules in the same order as ``StandardRPNHead.forward``; a
        ReLU runs in place (a full frame's memory peaks here, and the pre-activation map is not needed).
        """
        t = x
        for c in convs:
            if isinstance(getattr(c, "activation", None), nn.ReLU) and c.norm is None:
                t = F.conv2d(t, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)
                t = t.relu_()
            else:
                t = c(t)
        charge_head(executed=self._level_macs(tuple(x.shape)))
        return head.objectness_logits(t), head.anchor_deltas(t)

    def _level_incremental(
        self,
        convs: List[nn.Module],
        head: nn.Module,
        x: Tensor,
        inc: List[int],
        olds: List[_LevelCache],
        masks: List[Tensor],
        lg: Tensor,
        dl: Tensor,
    ) -> None:
        """One level of the streams ``inc``, written into ``lg`` / ``dl`` (the previous frame's outputs
        elsewhere). The changed outputs (the pyramid's changed region grown by every conv's padding) are covered
        with rectangles; per rectangle the convs run in sequence, each on the rectangle grown by the padding of
        the convs after it (clamped to the map, whose border the next conv zero-pads as the dense one does), so no
        hidden map needs to be kept between frames; then the 1×1 heads."""
        for i, old in zip(inc, olds):
            lg[i].copy_(old.logits)
            dl[i].copy_(old.deltas)
        h, w = x.shape[-2:]
        pads = [c.padding[0] for c in convs]
        # the halo each conv computes beyond the rectangle: what the convs after it read
        grow = [sum(pads[j + 1 :]) for j in range(len(convs))]
        rect_lists, dense_streams = [], []
        for i, m in zip(inc, masks):
            rs, cover = rects(dilate(m, sum(pads)), TILE)
            if cover > DENSE_ABOVE:  # recompute this stream's map densely
                dense_streams.append(i)
                rs = []
            rect_lists.append(rs)
        if dense_streams:
            a, d = self._dense_level(convs, head, x[dense_streams])
            lg[dense_streams], dl[dense_streams] = a.to(lg.dtype), d.to(dl.dtype)
        first = [[_grown(r, grow[0], h, w) for r in rs] for rs in rect_lists]
        for big, idx, t in run_on_rects(convs[0], [x[i] for i in inc], first):
            streams = [inc[j] for j in idx]
            rect = next(r for r in rect_lists[idx[0]] if _grown(r, grow[0], h, w) == big)
            for ci in range(1, len(convs)):
                # the next conv's rectangle, in the coordinates of ``t`` (which covers ``big``)
                sub = _grown(rect, grow[ci], h, w)
                local = (sub[0] - big[0], sub[1] - big[0], sub[2] - big[2], sub[3] - big[2])
                maps = list(t)
                ((_, _, t),) = run_on_rects(convs[ci], maps, [[local]] * len(maps))
                big = sub
            self._heads_into(head, t, streams, rect, lg, dl)

    @staticmethod
    def _heads_into(
        head: nn.Module,
        t: Tensor,
        streams: List[int],
        rect: Tuple[int, int, int, int],
        lg: Tensor,
        dl: Tensor,
    ) -> None:
        """The 1×1 heads on the last conv's output ``t`` (len(streams), C, h, w) on ``rect``."""
        y0, y1, x0, x1 = rect
        a = head.objectness_logits(t)
        d = head.anchor_deltas(t)
        charge_head(
            executed=conv_macs(head.objectness_logits, a.numel())
            + conv_macs(head.anchor_deltas, d.numel())
        )
        for k, i in enumerate(streams):
            lg[i, :, y0:y1, x0:x1] = a[k]
            dl[i, :, y0:y1, x0:x1] = d[k]

    # ------------------------------------------------------------------------------------------------ FLOPs
    def _level_macs(self, shape: Tuple[int, ...]) -> int:
        head = self.rpn.rpn_head
        macs, out = module_macs(head.conv, shape)
        return (
            macs
            + module_macs(head.objectness_logits, out)[0]
            + module_macs(head.anchor_deltas, out)[0]
        )

    def _dense_macs(self, feats: List[Tensor]) -> int:
        """MACs of the dense RPN head on these levels."""
        return sum(self._level_macs(tuple(f.shape)) for f in feats)
