"""Detection metrics of ImageNet VID, in NumPy.

* :func:`coco_ap50`: the paper's metric, COCO-style AP at IoU 0.5 over all frames, exactly as pycocotools'
  ``COCOeval`` (and torchmetrics' ``MeanAveragePrecision`` ``map_50``, which the paper reports) compute it: at most
  100 detections per image and class, greedy matching in score order, 101-point interpolated precision, all areas,
  the mean over classes that have ground truth.
* :func:`vid_devkit_ap50`: the VOC-style per-class AP@0.5 of the ImageNet VID devkit: greedy matching in score
  order with inclusive-pixel IoU (+1), the devkit's size-dependent threshold min(0.5, wh/((w+10)(h+10))), and the
  all-point interpolated area under the precision envelope.

Inputs: ``gts`` maps an image id to ``(boxes (G,4) xyxy, labels (G,))``; ``dets`` maps an image id to ``(boxes (D,4),
scores (D,), labels (D,))``. Per-class APs are NaN for classes without ground truth.
"""

from __future__ import annotations

from typing import Dict, Hashable, List, Tuple

import numpy as np

__all__ = ["coco_ap50", "vid_devkit_ap50", "box_iou_coco", "box_iou_devkit"]

GT = Dict[Hashable, Tuple[np.ndarray, np.ndarray]]
DET = Dict[Hashable, Tuple[np.ndarray, np.ndarray, np.ndarray]]

_REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def box_iou_coco(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (A, B) of xyxy boxes with continuous coordinates (COCO: area = w·h)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_iou_devkit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (A, B) with the devkit's inclusive-pixel convention (width = x1 − x0 + 1); 0 without overlap."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    pos = (iw > 0) & (ih > 0)
    inter = np.where(pos, iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(pos, inter / union, 0.0)


def _sorted_ids(gts: GT) -> list:
    try:
        return sorted(gts)
    except TypeError:
        return sorted(gts, key=str)


def _check_ids(gts: GT, dets: DET) -> None:
    extra = [k for k in dets if k not in gts]
    if extra:
        raise KeyError(f"detections for images without ground-truth entry: {extra[:5]}")


def _class_boxes(
    gts: GT, dets: DET, img: Hashable, c: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth boxes of class ``c`` in image ``img``, and its class-``c`` detections and scores sorted by
    descending score (stable)."""
    gb, gl = gts[img]
    g = np.asarray(gb, dtype=np.float64).reshape(-1, 4)[np.asarray(gl) == c]
    if img not in dets:
        return g, np.zeros((0, 4)), np.zeros(0)
    db, ds, dl = dets[img]
    sel = np.asarray(dl) == c
    d = np.asarray(db, dtype=np.float64).reshape(-1, 4)[sel]
    s = np.asarray(ds, dtype=np.float64)[sel]
    order = np.argsort(-s, kind="mergesort")
    return g, d[order], s[order]


def _cumulative_tp_fp(
    scores: List[np.ndarray], matched: List[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives over all images' detections in descending score order."""
    s = np.concatenate(scores)
    m = np.concatenate(matched)[np.argsort(-s, kind="mergesort")]
    return np.cumsum(m).astype(np.float64), np.cumsum(~m).astype(np.float64)


def coco_ap50(
    gts: GT, dets: DET, num_classes: int, max_dets: int = 100
) -> Tuple[float, np.ndarray]:
    """COCO-style AP at IoU 0.5 (pycocotools ``COCOeval`` ``stats[1]`` with all areas and 100 detections).
    Returns (mean AP over classes with ground truth, per-class AP with NaN for classes without)."""
    _check_ids(gts, dets)
    ids = _sorted_ids(gts)
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        scores_all, matched_all = [], []
        npos = 0
        for img in ids:
            g, d, s = _class_boxes(gts, dets, img, c)
            npos += len(g)
            if len(d) == 0:
                continue
            d, s = d[:max_dets], s[:max_dets]
            iou = box_iou_coco(d, g)
            taken = np.zeros(len(g), dtype=bool)
            matched = np.zeros(len(d), dtype=bool)
            for i in range(len(d)):
                best, m = min(0.5, 1 - 1e-10), -1
                for j in range(len(g)):
                    if taken[j] or iou[i, j] < best:
                        continue
                    best, m = iou[i, j], j
                if m >= 0:
                    taken[m] = True
                    matched[i] = True
            scores_all.append(s)
            matched_all.append(matched)
        if npos == 0:
            continue
        if not scores_all:
            ap[c] = 0.0
            continue
        tp, fp = _cumulative_tp_fp(scores_all, matched_all)
        rc = tp / npos
        pr = (tp / (fp + tp + np.spacing(1))).tolist()
        for i in range(len(pr) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        inds = np.searchsorted(rc, _REC_THRS, side="left")
        q = np.array([pr[i] if i < len(pr) else 0.0 for i in inds])
        ap[c] = q.mean()
    valid = ~np.isnan(ap)
    return (float(ap[valid].mean()) if valid.any() else float("nan")), ap


def _voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def vid_devkit_ap50(gts: GT, dets: DET, num_classes: int) -> Tuple[float, np.ndarray]:
    """VOC-style AP@0.5 of the ImageNet VID devkit. Returns (mean over classes with ground truth, per-class AP with
    NaN for classes without)."""
    _check_ids(gts, dets)
    ids = _sorted_ids(gts)
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        scores_all, tp_all = [], []
        npos = 0
        for img in ids:
            g, d, s = _class_boxes(gts, dets, img, c)
            npos += len(g)
            if len(d) == 0:
                continue
            gw = g[:, 2] - g[:, 0] + 1
            gh = g[:, 3] - g[:, 1] + 1
            thr = np.minimum(0.5, (gw * gh) / ((gw + 10) * (gh + 10)))
            iou = box_iou_devkit(d, g)
            taken = np.zeros(len(g), dtype=bool)
            tp = np.zeros(len(d), dtype=bool)
            for i in range(len(d)):
                best, m = -np.inf, -1
                for j in range(len(g)):
                    if taken[j]:
                        continue
                    if iou[i, j] >= thr[j] and iou[i, j] > best:
                        best, m = iou[i, j], j
                if m >= 0:
                    taken[m] = True
                    tp[i] = True
            scores_all.append(s)
            tp_all.append(tp)
        if npos == 0:
            continue
        if not scores_all:
            ap[c] = 0.0
            continue
        tpc, fpc = _cumulative_tp_fp(scores_all, tp_all)
        ap[c] = _voc_ap(tpc / npos, tpc / (tpc + fpc))
    valid = ~np.isnan(ap)
    return (float(ap[valid].mean()) if valid.any() else float("nan")), ap
