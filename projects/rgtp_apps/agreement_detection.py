"""Detection agreement (:mod:`rgtp_apps.agreement`): the pruned detector against the dense one, frame by frame.

Every method is an :class:`rgtp_vitdet.predictor.VideoPredictor` of the same config and weights (dense:
``MODEL.RGTP.ENABLED False``; baselines: ``MODEL.RGTP.SELECTION``); each frame goes through all of them, in an order
that rotates from frame to frame so that no method always runs first. On every frame the dense detections with
score >= ``score_thresh`` are the pseudo ground truth:

* ``ap50``: COCO AP at IoU 0.5 (pycocotools ``COCOeval``, pure Python, all areas, up to
  max(100, ``TEST.DETECTIONS_PER_IMAGE``) detections per image and class) of *all* the method's detections (every
  score the model returns, so that the ranking counts) against the pseudo ground truth, over the frames of a video
  (per video) or of every video (overall); the mean over classes with pseudo ground truth;
* ``recovered``: the share of pseudo ground-truth boxes matched by a detection of the method with score >=
  ``score_thresh``, same class, IoU >= 0.5 (greedy, highest IoU first, one-to-one); ``precision``: the share of
  those detections of the method that match; ``mean_iou``: the mean IoU of the matched pairs;
* ``gflops_paper`` / ``gflops_executed``: backbone GFLOPs per frame (the model's ``rgtp`` statistics), and
  ``speedup``: the dense model's time over the method's (the predictor's model-call time, same run).
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .agreement import (
    SELECTION_KEYS,
    AgreementError,
    FrameReader,
    count_labels,
    frame_label,
    put,
    ratio,
    skipped_reason,
)

__all__ = ["coco_ap50_pycocotools", "match_boxes", "evaluate_detection"]

logger = logging.getLogger("rgtp.agreement")

#: One frame's detections of one method: boxes (D, 4) xyxy, scores (D,), labels (D,).
Dets = Tuple[np.ndarray, np.ndarray, np.ndarray]


def coco_ap50_pycocotools(
    gts: Sequence[Tuple[np.ndarray, np.ndarray]], dets: Sequence[Dets], max_dets: int = 100
) -> Tuple[Optional[float], Optional[str]]:
    """COCO AP at IoU 0.5 of ``dets`` against ``gts`` (one entry per frame) with pycocotools' ``COCOeval`` on
    in-memory COCO objects; (None, reason) when there is no ground truth, 0.0 when there are no detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n_gt = sum(len(lab) for _, lab in gts)
    if n_gt == 0:
        return (
            None,
            "no pseudo ground truth: the dense model made no detection at the score threshold",
        )
    if sum(len(s) for _, s, _ in dets) == 0:
        return 0.0, None
    cats = sorted(
        {int(c) for _, lab in gts for c in lab} | {int(c) for *_, lab in dets for c in lab}
    )
    anns, res = [], []
    for img, (boxes, labels) in enumerate(gts):
        for b, c in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), labels):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img,
                    "category_id": int(c) + 1,
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    for img, (boxes, scores, labels) in enumerate(dets):
        for b, s, c in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), scores, labels):
            box = [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
            res.append({"image_id": img, "category_id": int(c) + 1, "bbox": box, "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i} for i in range(len(gts))],
            "annotations": anns,
            "categories": [{"id": c + 1, "name": str(c)} for c in cats],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.params.maxDets = [max(100, int(max_dets))]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, -1]  # (recall thresholds, classes)
    valid = prec[prec > -1]
    return (
        (float(valid.mean()), None) if valid.size else (None, "no class with pseudo ground truth")
    )


def match_boxes(
    ref_boxes: np.ndarray, ref_labels: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> List[float]:
    """IoUs of the one-to-one matches (same class, IoU >= 0.5, greedy: highest IoU first) between reference boxes
    and boxes (xyxy)."""
    from rgtp_vitdet.metrics import box_iou_coco

    out: List[float] = []
    for c in np.unique(ref_labels):
        g, q = ref_boxes[ref_labels == c], boxes[labels == c]
        if len(g) == 0 or len(q) == 0:
            continue
        iou = box_iou_coco(g, q)
        while True:
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            if iou[i, j] < 0.5:
                break
            out.append(float(iou[i, j]))
            iou[i, :], iou[:, j] = -1.0, -1.0
    return out


def _build_methods(
    config_file: str, specs: Sequence[Tuple[str, List[str]]], device: str, explicit_pruned: bool
) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
    from detectron2.config import get_cfg
    from rgtp_vitdet import ConfigError, VideoPredictor, add_rgtp_config, rgtp_config_from_cfg

    from rgtp.selection import FrameType, kept_count

    methods, skipped = [], {}
    for name, overrides in specs:
        cfg = get_cfg()
        add_rgtp_config(cfg)
        try:
            cfg.merge_from_file(config_file)
            cfg.merge_from_list(list(overrides))
        except (KeyError, AssertionError, ValueError) as e:
            raise AgreementError(f"bad detection config {config_file} (or --opts): {e}") from None
        cfg.MODEL.DEVICE = device
        r = cfg.MODEL.RGTP
        if name == "pruned" and not r.ENABLED and not explicit_pruned:
            raise AgreementError(
                f"{config_file} has MODEL.RGTP.ENABLED False: the pruned model would be the dense one; pass a "
                f"pruned config (e.g. configs/demo/vid_keep64.yaml)"
            )
        try:
            predictor = VideoPredictor(cfg, input_format="RGB")
        except ConfigError as e:
            if name in ("pruned", "dense") or SELECTION_KEYS["detection"] not in str(e):
                raise
            skipped[name] = skipped_reason(name, "detection", e)
            logger.warning("skipping the %s baseline: %s", name, skipped[name])
            continue
        grid = cfg.MODEL.VIT.INPUT_SIZE // cfg.MODEL.VIT.PATCH_SIZE
        kept = grid * grid
        if r.ENABLED:
            kept = int(kept_count(rgtp_config_from_cfg(cfg), (grid, grid), FrameType.PRUNED))
        methods.append(
            {
                "name": name,
                "predictor": predictor,
                "selection": str(r.SELECTION) if r.ENABLED else "dense",
                "overrides": list(overrides),
                "weights": cfg.MODEL.WEIGHTS,
                "kept_tokens": kept,
                "tokens": grid * grid,
                "max_dets": int(cfg.TEST.DETECTIONS_PER_IMAGE),
            }
        )
    return methods, skipped


def _run_video(reader: FrameReader, methods: List[Dict[str, Any]], bar: Any, warm: bool) -> dict:
    """Every frame through every method; per method a list of per-frame records."""
    frames: Dict[str, List[Dict[str, Any]]] = {m["name"]: [] for m in methods}
    size = None
    for m in methods:
        m["predictor"].reset()
    for i, frame in enumerate(reader):
        size = list(frame.shape[:2])
        if i == 0 and not warm:  # one untimed call per model before the first timed frame
            for m in methods:
                m["predictor"](frame)
                m["predictor"].reset()
        k = i % len(methods)
        for m in methods[k:] + methods[:k]:
            out = m["predictor"](frame)
            inst = out["instances"]
            state = m["predictor"].state()
            cause = out.get("reset_cause", state.reset_cause if state is not None else None)
            frames[m["name"]].append(
                {
                    "boxes": inst.pred_boxes.tensor.numpy().astype(np.float64),
                    "scores": inst.scores.numpy().astype(np.float64),
                    "labels": inst.pred_classes.numpy(),
                    "label": frame_label(out["frame_type"], cause),
                    "gflops_paper": out.get("gflops_paper"),
                    "gflops_executed": out.get("gflops"),
                    "ms": float(out["ms"]),
                }
            )
        if bar is not None:
            bar.update(1)
    return {"frames": frames, "size": size}


def _cost(recs: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"frames": len(recs)}
    for key in ("gflops_paper", "gflops_executed"):
        vals = [r[key] for r in recs]
        ok = bool(vals) and all(v is not None for v in vals)
        put(
            out,
            key,
            (float(np.mean(vals)), None) if ok else (None, "MODEL.RGTP.COUNT_FLOPS is off"),
        )
    out["ms_per_frame"] = float(np.mean([r["ms"] for r in recs]))
    out["frame_types"] = count_labels([r["label"] for r in recs])
    return out


def _summary(dense: List[dict], recs: List[dict], thresh: float, max_dets: int) -> Dict[str, Any]:
    """The agreement of one method's frames with the dense frames (one video, or all videos)."""
    gts, dets, ious = [], [], []
    n_ref = n_det = 0
    for d, r in zip(dense, recs):
        keep, mine = d["scores"] >= thresh, r["scores"] >= thresh
        gts.append((d["boxes"][keep], d["labels"][keep]))
        dets.append((r["boxes"], r["scores"], r["labels"]))
        ious += match_boxes(
            d["boxes"][keep], d["labels"][keep], r["boxes"][mine], r["labels"][mine]
        )
        n_ref, n_det = n_ref + int(keep.sum()), n_det + int(mine.sum())
    out = _cost(recs)
    out.update(dense_detections=n_ref, detections=n_det, matched=len(ious))
    put(out, "ap50", coco_ap50_pycocotools(gts, dets, max_dets))
    put(out, "recovered", ratio(len(ious), n_ref, "no dense detection at the score threshold"))
    put(out, "precision", ratio(len(ious), n_det, "the method made no detection at the threshold"))
    put(out, "mean_iou", ratio(sum(ious), len(ious), "no detection matched a dense one"))
    dense_ms = sum(x["ms"] for x in dense)
    put(out, "speedup", ratio(dense_ms, sum(x["ms"] for x in recs), "no time measured"))
    return out


def _timeline(dense: List[dict], recs: List[dict], thresh: float) -> Dict[str, list]:
    recall, miou = [], []
    for d, r in zip(dense, recs):
        keep, mine = d["scores"] >= thresh, r["scores"] >= thresh
        ious = match_boxes(d["boxes"][keep], d["labels"][keep], r["boxes"][mine], r["labels"][mine])
        recall.append(ratio(len(ious), int(keep.sum()), "")[0])
        miou.append(ratio(sum(ious), len(ious), "")[0])
    return {"frame_type": [r["label"] for r in recs], "recovered": recall, "mean_iou": miou}


def evaluate_detection(
    videos: List[str],
    names: List[str],
    config_file: str,
    specs: Sequence[Tuple[str, List[str]]],
    score_thresh: float,
    max_frames: Optional[int],
    device: str,
    progress: bool,
    explicit_pruned: bool,
) -> Dict[str, Any]:
    """The detection report (see the module docstring); :func:`rgtp_apps.agreement.run_agreement` calls it."""
    from tqdm import tqdm

    methods, skipped = _build_methods(config_file, specs, device, explicit_pruned)
    readers: List[Tuple[str, str, Any]] = []
    for path, name in zip(videos, names):
        try:
            readers.append((path, name, FrameReader(path, max_frames)))
        except AgreementError as e:
            readers.append((path, name, e))
    counts = [r.count for *_, r in readers if isinstance(r, FrameReader)]
    total = sum(counts) if counts and all(counts) else None
    bar = tqdm(total=total, desc="agreement", unit="frame", disable=not progress)
    entries, bad, all_frames = [], [], {m["name"]: [] for m in methods}
    max_dets = methods[0]["max_dets"]
    try:
        for path, name, reader in readers:
            if isinstance(reader, AgreementError):
                bad.append({"video": path, "error": str(reader)})
                continue
            try:
                run = _run_video(reader, methods, bar, warm=bool(entries))
            except AgreementError as e:
                bad.append({"video": path, "error": str(e)})
                continue
            frames = run["frames"]
            dense = frames["dense"]
            entry: Dict[str, Any] = {"video": path, "name": name, "frames": len(dense)}
            entry.update(size=run["size"], problem=reader.problem or None)
            entry["methods"] = {"dense": _cost(dense)}
            entry["methods"]["dense"]["detections"] = int(
                sum((d["scores"] >= score_thresh).sum() for d in dense)
            )
            timeline: Dict[str, Any] = {"frame_type": {"dense": [d["label"] for d in dense]}}
            timeline["dense_detections"] = [int((d["scores"] >= score_thresh).sum()) for d in dense]
            timeline["recovered"], timeline["mean_iou"] = {}, {}
            timeline["null_reason"] = (
                "a frame without dense detections (recovered) or matches (IoU)"
            )
            for m in methods[1:]:
                recs = frames[m["name"]]
                entry["methods"][m["name"]] = _summary(dense, recs, score_thresh, max_dets)
                t = _timeline(dense, recs, score_thresh)
                timeline["frame_type"][m["name"]] = t["frame_type"]
                timeline["recovered"][m["name"]] = t["recovered"]
                timeline["mean_iou"][m["name"]] = t["mean_iou"]
            entry["timeline"] = timeline
            entries.append(entry)
            for k, v in frames.items():
                all_frames[k] += v
    finally:
        bar.close()
    overall: Dict[str, Any] = {"videos": len(entries), "frames": len(all_frames["dense"])}
    if entries:
        dense = all_frames["dense"]
        overall["methods"] = {"dense": _cost(dense)}
        overall["methods"]["dense"]["detections"] = sum(
            e["methods"]["dense"]["detections"] for e in entries
        )
        for m in methods[1:]:
            overall["methods"][m["name"]] = _summary(
                dense, all_frames[m["name"]], score_thresh, max_dets
            )
    return {
        "tool": "rgtp_apps.agreement",
        "config_file": config_file,
        "reference": "dense",
        "score_thresh": score_thresh,
        "methods": {
            m["name"]: {
                k: m[k] for k in ("selection", "overrides", "weights", "kept_tokens", "tokens")
            }
            for m in methods
        },
        "skipped_methods": skipped,
        "videos": entries,
        "skipped_videos": bad,
        "overall": overall,
    }
