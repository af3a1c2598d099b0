"""The ImageNet VID evaluator: gathers every process's per-frame detections and reports the paper's metric
(COCO-style AP at IoU 0.5 over all frames), the VID devkit's VOC-style AP@0.5, per-class APs, frames per second
and backbone GFLOPs per frame (paper convention and executed)."""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from rgtp.fileio import atomic_torch_save

from .metrics import coco_ap50, vid_devkit_ap50

__all__ = ["VIDEvaluator", "atomic_torch_save"]

logger = logging.getLogger("detectron2.rgtp_vitdet.evaluator")


def _pct(value: float) -> Optional[float]:
    """100 x ``value``, or None when it is undefined (NaN)."""
    v = float(value)
    return None if not np.isfinite(v) else 100.0 * v


class VIDEvaluator(DatasetEvaluator):
    """Evaluate detections on an ImageNet VID split registered by :mod:`rgtp_vitdet.vid`.

    Results (``{"bbox": {...}}``): ``AP50`` (the paper's number, ×100), ``AP50_devkit`` (VOC-style, ×100),
    ``AP50-<class>`` and ``AP50_devkit-<class>``, ``fps`` (frames per second of the model forward per process),
    ``gflops_paper`` / ``gflops_executed`` (backbone GFLOPs per frame averaged over all frames), ``frames``,
    ``videos`` and ``split_videos`` (videos whose frames went to more than one process; always 0 with
    :class:`~rgtp_vitdet.data.VideoInferenceSampler`).
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        save_predictions: bool = True,
    ) -> None:
        self.save_predictions = save_predictions
        self.dataset_name = dataset_name
        self.distributed = distributed
        self.output_dir = output_dir
        self.class_names = list(MetadataCatalog.get(dataset_name).thing_classes)
        self.reset()

    def reset(self) -> None:
        self._predictions: List[dict] = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Keep each frame's detections (original-image pixels), its video and the model's per-frame statistics."""
        rank = comm.get_rank()
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self._predictions.append(
                {
                    "image_id": inp["image_id"],
                    "video_id": inp.get("video_id"),
                    "frame_index": inp.get("frame_index"),
                    "rank": rank,
                    "boxes": inst.pred_boxes.tensor.numpy().astype(np.float32),
                    "scores": inst.scores.numpy().astype(np.float32),
                    "classes": inst.pred_classes.numpy().astype(np.int64),
                    "stats": dict(out.get("rgtp", {})),
                }
            )

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        """Gather predictions to the main process and compute every metric there (other processes return None)."""
        if self.distributed:
            comm.synchronize()
            preds = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return None
        else:
            preds = self._predictions
        if not preds:
            logger.warning(f"[VIDEvaluator] no predictions for {self.dataset_name!r}")
            return {}
        if self.output_dir and self.save_predictions:
            atomic_torch_save(
                preds, os.path.join(self.output_dir, f"{self.dataset_name}_predictions.pth")
            )
        dicts = DatasetCatalog.get(self.dataset_name)
        gts = {
            d["image_id"]: (
                np.array([a["bbox"] for a in d["annotations"]], dtype=np.float64).reshape(-1, 4),
                np.array([a["category_id"] for a in d["annotations"]], dtype=np.int64),
            )
            for d in dicts
        }
        dets = {p["image_id"]: (p["boxes"], p["scores"], p["classes"]) for p in preds}
        missing = len(gts) - len(dets)
        if missing:
            logger.warning(
                f"[VIDEvaluator] {missing} of {len(gts)} frames of {self.dataset_name!r} have no prediction"
            )
        k = len(self.class_names)
        ap, per_class = coco_ap50(gts, dets, k)
        ap_dev, per_class_dev = vid_devkit_ap50(gts, dets, k)
        num_boxes = int(sum(len(g[1]) for g in gts.values()))
        res: Dict[str, Optional[float]] = OrderedDict()
        # Undefined metrics are None (JSON null) with a reason beside them, never NaN.
        res["AP50"] = _pct(ap)
        res["AP50_devkit"] = _pct(ap_dev)
        if res["AP50"] is None:
            reason = f"no ground-truth boxes in the {len(gts)} frames of {self.dataset_name!r}: AP is undefined"
            res["AP50_reason"] = reason  # type: ignore[assignment]
            res["AP50_devkit_reason"] = reason  # type: ignore[assignment]
            logger.warning(f"[VIDEvaluator] {reason}")
        res["ground_truth_boxes"] = float(num_boxes)
        for name, a, b in zip(self.class_names, per_class, per_class_dev):
            res[f"AP50-{name}"] = _pct(a)
            res[f"AP50_devkit-{name}"] = _pct(b)
        res["per_class_null_reason"] = "a per-class AP is null for a class without ground-truth boxes"  # type: ignore[assignment]
        res.update(self._speed_and_flops(preds))
        self._log_table(res, per_class, per_class_dev)
        return {"bbox": res}

    @staticmethod
    def _speed_and_flops(preds: List[dict]) -> Dict[str, float]:
        out: Dict[str, float] = OrderedDict()
        by_video = defaultdict(set)
        for p in preds:
            by_video[p["video_id"]].add(p["rank"])
        out["frames"] = float(len(preds))
        out["videos"] = float(len(by_video))
        out["split_videos"] = float(sum(len(r) > 1 for r in by_video.values()))
        secs = [p["stats"].get("seconds") for p in preds]
        if all(s is not None for s in secs) and sum(secs) > 0:
            out["fps"] = len(preds) / float(sum(secs))
        for key in ("gflops_paper", "gflops_executed"):
            vals = [p["stats"].get(key) for p in preds]
            if all(v is not None for v in vals):
                out[key] = float(np.mean(vals))
        types = defaultdict(int)
        for p in preds:
            types[p["stats"].get("frame_type", "unknown")] += 1
        for t, n in sorted(types.items()):
            out[f"frames_{t}"] = float(n)
        return out

    def _log_table(
        self, res: Dict[str, float], per_class: np.ndarray, per_class_dev: np.ndarray
    ) -> None:
        rows = [
            (
                n,
                f"{100 * a:.2f}" if not np.isnan(a) else "-",
                f"{100 * b:.2f}" if not np.isnan(b) else "-",
            )
            for n, a, b in zip(self.class_names, per_class, per_class_dev)
        ]
        table = tabulate(
            rows, headers=["class", "AP50 (COCO-style)", "AP50 (VID devkit)"], tablefmt="pipe"
        )
        logger.info(f"Per-class AP on {self.dataset_name}:\n{table}")
        summary = {
            k: v for k, v in res.items() if "-" not in k and isinstance(v, (int, float, type(None)))
        }

        def num(v: Optional[float], fmt: str) -> str:
            return "undefined" if v is None else format(v, fmt)

        logger.info(
            f"VID {self.dataset_name}: AP50 {num(summary['AP50'], '.2f')} (paper metric, COCO-style) | "
            f"AP50_devkit {num(summary['AP50_devkit'], '.2f')} (VOC-style) | "
            + " | ".join(
                f"{k} {num(v, '.4g')}"
                for k, v in summary.items()
                if k not in ("AP50", "AP50_devkit")
            )
        )
