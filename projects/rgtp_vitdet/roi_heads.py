"""Detections of a batch of video frames with the box head run only on the proposals a pruned frame changed.

:class:`StreamingROIHeads` wraps detectron2's ``StandardROIHeads`` (box branch: ``ROIPooler`` → box head → box
predictor; no mask or keypoint branch) without owning parameters. The box head and predictor map each proposal's
pooled features to its class scores and box deltas independently of the other proposals, and the pooled features
of a box depend only on the pyramid level it is assigned to (by its size) inside the box's sampling support. So a
proposal of a pruned frame whose box is bit-identical to one of the stream's previous-frame proposals, and whose
support on its level lies outside the region the pyramid reports changed
(:meth:`rgtp_vitdet.backbone.StreamingFeaturePyramid.changed_regions`), has the previous frame's scores and deltas
exactly (to the float rounding of a different batch size). Only the other proposals are pooled and run through
the box head; detectron2's ``box_predictor.inference`` (score threshold, per-class NMS, top-k) runs on all of them.

The RPN outputs outside its changed regions are reused exactly too (:class:`rgtp_vitdet.rpn.StreamingRPN`), so
such proposals decode to the same boxes: on the benchmark's frames about half of them are reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from rgtp.state import StreamState

from .regions import CachedHeadPart, cache_key, charge_head, roi_heads_macs

__all__ = ["StreamingROIHeads", "support_rects"]

#: Pixels added on each side of a box's bilinear sampling support before it is checked against the changed region:
#: the support is exact up to where ROIAlign rounds, and a pixel of margin costs little reuse.
MARGIN = 1
#: Proposals run through the box head at a time (the outputs are per proposal: chunks change nothing but memory).
CHUNK = 100


@dataclass
class _Entry:
    t: int
    key: Tuple[Any, ...]
    boxes: Tensor  # (N, 4) the frame's proposal boxes
    scores: Tensor  # (N, K + 1) the box predictor's class logits
    deltas: Tensor  # (N, 4·K or 4) its box deltas


class StreamingROIHeads(CachedHeadPart):
    """Detections of ``roi_heads`` (a detectron2 ``StandardROIHeads`` with an ``ROIAlign`` pooler) for frames of
    streams.

    Args:
        roi_heads: the model's ROI heads (parameters stay there).
        pyramid: the backbone that reports changed regions (``changed_regions(states)``), or None.
        enabled: reuse the previous frame's box predictions where nothing they read changed; False runs
            ``roi_heads`` as is.
    """

    slot = "roi"

    def __init__(
        self, roi_heads: nn.Module, pyramid: Optional[nn.Module], enabled: bool = True
    ) -> None:
        self.roi_heads = roi_heads
        super().__init__(roi_heads, pyramid, enabled)
        # proposals of pruned frames (with a previous frame to reuse from) whose predictions were reused /
        # computed, since construction
        self.reused = 0
        self.computed = 0

    @classmethod
    def supported(cls, roi_heads: nn.Module, pyramid: Optional[nn.Module]) -> bool:
        """Whether ``roi_heads`` has the structure whose per-proposal outputs can be reused (a box branch only,
        pooled by ``ROIAlign``), and ``pyramid`` reports changed regions."""
        if type(roi_heads) is not StandardROIHeads or roi_heads.mask_on or roi_heads.keypoint_on:
            return False
        if not cls.reports_changes(pyramid):
            return False
        pooler = roi_heads.box_pooler
        return isinstance(pooler, ROIPooler) and all(
            isinstance(p, ROIAlign) for p in pooler.level_poolers
        )

    def detect(
        self,
        images: ImageList,
        features: Dict[str, Tensor],
        proposals: List[Instances],
        states: Optional[Sequence[StreamState]] = None,
    ) -> List[Instances]:
        """``roi_heads(images, features, proposals)``'s detections (inference), with reused box predictions."""
        rh = self.roi_heads
        channels = features[rh.box_in_features[0]].shape[1]
        total = sum(len(p) for p in proposals)
        charge_head(dense=roi_heads_macs(rh, channels, total))
        if not self.enabled or states is None or rh.training:
            charge_head(executed=roi_heads_macs(rh, channels, total))
            return rh(images, features, proposals, None)[0]
        feats = [features[f] for f in rh.box_in_features]
        key = cache_key(rh, feats)
        changes = self.pyramid.changed_regions(states)
        boxes = [p.proposal_boxes.tensor for p in proposals]
        reuse: List[Tensor] = []  # per image: the previous-frame row each proposal reuses, or -1
        for i, s in enumerate(states):
            e = self._caches.get(s, "roi")
            ch = changes[i]
            if e is None or ch is None or e.t != s.t - 1 or e.key != key:
                reuse.append(boxes[i].new_full((len(boxes[i]),), -1, dtype=torch.long))
                continue
            reuse.append(self._reusable(boxes[i], e.boxes, ch, feats))
            self.reused += int((reuse[-1] >= 0).sum())
            self.computed += int((reuse[-1] < 0).sum())
        compute = [torch.nonzero(r < 0).flatten() for r in reuse]
        n = sum(len(c) for c in compute)
        charge_head(executed=roi_heads_macs(rh, channels, n))
        scores_new, deltas_new = self._predict(feats, [b[c] for b, c in zip(boxes, compute)])
        scores, deltas, start = [], [], 0
        for i, s in enumerate(states):
            c, r = compute[i], reuse[i]
            if len(c) == len(r):  # nothing reused: the rows as computed
                sc, dl = scores_new[start : start + len(c)], deltas_new[start : start + len(c)]
            else:
                e = self._caches.get(s, "roi")
                sc = e.scores.new_empty((len(r), e.scores.shape[1]))
                dl = e.deltas.new_empty((len(r), e.deltas.shape[1]))
                hit = r >= 0
                sc[hit], dl[hit] = e.scores[r[hit]], e.deltas[r[hit]]
                if len(c):
                    sc[c] = scores_new[start : start + len(c)].to(sc.dtype)
                    dl[c] = deltas_new[start : start + len(c)].to(dl.dtype)
            start += len(c)
            self._caches.set(s, "roi", _Entry(s.t, key, boxes[i], sc, dl))
            scores.append(sc)
            deltas.append(dl)
        predictions = (torch.cat(scores), torch.cat(deltas))
        results, _ = rh.box_predictor.inference(predictions, proposals)
        return results

    def _predict(self, feats: List[Tensor], boxes: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """The box predictor's scores and deltas of ``boxes`` (per image), the box head run on :data:`CHUNK`
        proposals at a time: its intermediate maps are what a full frame's memory peaks on."""
        rh = self.roi_heads
        pred = rh.box_predictor
        if not sum(len(b) for b in boxes):
            return (
                feats[0].new_empty((0, pred.cls_score.out_features)),
                feats[0].new_empty((0, pred.bbox_pred.out_features)),
            )
        pooled = rh.box_pooler(feats, [Boxes(b) for b in boxes])
        outs = [pred(rh.box_head(x)) for x in pooled.split(CHUNK)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _reusable(
        self, boxes: Tensor, prev: Tensor, changed: Dict[str, Tensor], feats: List[Tensor]
    ) -> Tensor:
        """Per box: the row of ``prev`` holding the identical box, when its support on its level lies outside
        ``changed``; else -1."""
        out = torch.full((len(boxes),), -1, dtype=torch.long, device=boxes.device)
        if not len(boxes) or not len(prev):
            return out
        same = (boxes[:, None, :] == prev[None, :, :]).all(-1)  # (N, M)
        has, row = same.any(1), same.to(torch.uint8).argmax(1)
        if not bool(has.any()):
            return out
        pooler = self.roi_heads.box_pooler
        names = self.roi_heads.box_in_features
        if len(pooler.level_poolers) == 1:
            levels = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
        else:
            levels = assign_boxes_to_levels(
                [Boxes(boxes)],
                pooler.min_level,
                pooler.max_level,
                pooler.canonical_box_size,
                pooler.canonical_level,
            )
        clean = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
        for lvl, (name, align) in enumerate(zip(names, pooler.level_poolers)):
            sel = torch.nonzero(has & (levels == lvl)).flatten()
            if not len(sel):
                continue
            mask = changed.get(name)
            if mask is None:
                continue  # no changed region known for this level: nothing reused on it
            h, w = feats[lvl].shape[-2:]
            if tuple(mask.shape) != (h, w):
                continue
            y0, y1, x0, x1 = support_rects(boxes[sel], align, h, w)
            integral = torch.zeros((h + 1, w + 1), dtype=torch.int32, device=mask.device)
            integral[1:, 1:] = mask.to(torch.int32).cumsum(0).cumsum(1)
            hits = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
            clean[sel] = hits == 0
        ok = has & clean
        out[ok] = row[ok]
        return out


def support_rects(
    boxes: Tensor, align: ROIAlign, h: int, w: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The pixels ``align`` may read for each of ``boxes`` (image coordinates, (N, 4)) on an ``h``×``w`` level, as
    half-open rows ``[y0, y1)`` and columns ``[x0, x1)`` clamped to the map, with :data:`MARGIN` added.

    ROIAlign samples bilinearly at points inside ``[x0·s − o, x0·s − o + max(width·s, m)]`` (``s`` the level's
    scale, ``o`` = 0.5 when ``aligned``, else 0 with a minimum extent ``m`` = 1); a point at ``x`` reads columns
    ``floor(x)`` and ``floor(x) + 1`` (clamped to the map)."""
    s = float(align.spatial_scale)
    off = 0.5 if align.aligned else 0.0
    lo = boxes[:, :2] * s - off
    ext = (boxes[:, 2:] - boxes[:, :2]) * s
    if not align.aligned:
        ext = ext.clamp(min=1.0)
    hi = lo + ext
    first = torch.floor(lo).long() - MARGIN
    last = torch.floor(hi).long() + 1 + MARGIN  # inclusive
    x0 = first[:, 0].clamp(0, w)
    y0 = first[:, 1].clamp(0, h)
    x1 = (last[:, 0] + 1).clamp(0, w)
    y1 = (last[:, 1] + 1).clamp(0, h)
    x1, y1 = torch.maximum(x1, x0), torch.maximum(y1, y0)
    return y0, y1, x0, x1
