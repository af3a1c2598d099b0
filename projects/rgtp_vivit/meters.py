"""The test loop's meter (:class:`TestMeter`), multi-view ensembling and accuracy metrics."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

import torch
from fvcore.common.config import CfgNode
from torch import Tensor

from rgtp.fileio import json_safe

from . import distributed as du

logger = logging.getLogger(__name__)


def ensemble_views(view_logits: Tensor, method: str = "mean_logits") -> Tensor:
    """Video scores from ``(V, views, C)`` view logits: the mean of logits (the paper) or PySlowFast's sum of
    softmax."""
    if method == "mean_logits":
        return view_logits.mean(dim=1)
    if method == "sum_softmax":
        return view_logits.softmax(dim=-1).sum(dim=1)
    raise ValueError(
        f"unknown TEST.ENSEMBLE_METHOD {method!r}: allowed ('mean_logits', 'sum_softmax')"
    )


def topk_correct(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """Boolean ``(V,)``: the label is among the top-``k`` scores (k clipped to the number of classes)."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def classification_metrics(
    scores: Tensor,
    labels: Tensor,
    noun_scores: Optional[Tensor] = None,
    nouns: Optional[Tensor] = None,
) -> Dict[str, float]:
    """Top-1/top-5 and mean per-class accuracy in percent; with noun scores also noun and action top-1 (action =
    verb and noun both right, the EPIC-Kitchens convention)."""
    if scores.shape[0] == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_class_accuracy": float("nan")}
    top1 = topk_correct(scores, labels, 1)
    out = {
        "top1": 100.0 * top1.float().mean().item(),
        "top5": 100.0 * topk_correct(scores, labels, 5).float().mean().item(),
    }
    per_class = [top1[labels == c].float().mean().item() for c in torch.unique(labels).tolist()]
    out["mean_class_accuracy"] = 100.0 * sum(per_class) / len(per_class)
    if noun_scores is not None and nouns is not None:
        noun1 = topk_correct(noun_scores, nouns, 1)
        out["noun_top1"] = 100.0 * noun1.float().mean().item()
        out["action_top1"] = 100.0 * (noun1 & top1).float().mean().item()
    return out


class TestMeter:
    """The multi-view test's meter (PySlowFast's ``TestMeter``): accumulates this process's per-video predictions
    (the video's views ensembled, :func:`ensemble_views`), the videos skipped or partly decoded, the FLOPs counted
    and the loop's wall time; :meth:`finalize_metrics` gathers every process's part and, on the master process,
    computes the results (:func:`summarize`) and :meth:`log_summary` prints them.

    ``num_videos``: the videos the test asked for (all processes); ``stats`` is None until finalised, and stays
    None when nothing was measured (no usable video)."""

    __test__ = False  # not a pytest test class

    def __init__(self, cfg: CfgNode, num_videos: int) -> None:
        self.cfg = cfg
        self.num_videos = num_videos
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.records: List[Dict[str, Any]] = []
        self.skipped: List[Dict[str, str]] = []
        self.partial: List[Dict[str, str]] = []
        self.flops = {"executed": 0, "paper": 0}
        self.elapsed = 0.0
        self._start: Optional[float] = None
        self.stats: Optional[Dict[str, Any]] = None

    def iter_tic(self) -> None:
        """Start the wall clock of the loop."""
        self._start = time.perf_counter()

    def iter_toc(self) -> None:
        """Stop the wall clock (the seconds since :meth:`iter_tic` add to ``elapsed``)."""
        if self._start is not None:
            self.elapsed += time.perf_counter() - self._start
            self._start = None

    def skip(self, key: str, error: str) -> None:
        """A video that could not be used (missing, unreadable, too short)."""
        logger.warning("skipping %s: %s", key, error)
        self.skipped.append({"key": key, "error": error})

    def add_partial(self, key: str, problem: str) -> None:
        """A video evaluated on the frames that could be decoded."""
        self.partial.append({"key": key, "problem": problem})

    def update_stats(
        self,
        items: List[Dict[str, Any]],
        logits: Tensor,
        noun_logits: Optional[Tensor] = None,
        flops_executed: int = 0,
        flops_paper: int = 0,
    ) -> None:
        """Add the predictions of ``items`` (videos with ``index``, ``key``, ``label``, ``noun``) from the
        ``(len(items) * views, C)`` view logits of one batch, and the FLOPs the batch took."""
        self.flops["executed"] += int(flops_executed)
        self.flops["paper"] += int(flops_paper)
        method = self.cfg.TEST.ENSEMBLE_METHOD
        scores = ensemble_views(logits.float().cpu().view(len(items), -1, logits.shape[-1]), method)
        noun_scores = None
        if noun_logits is not None:
            noun_scores = ensemble_views(
                noun_logits.float().cpu().view(len(items), -1, noun_logits.shape[-1]), method
            )
        for i, it in enumerate(items):
            rec = {"index": it["index"], "key": it["key"], "label": it["label"], "noun": it["noun"]}
            rec["scores"] = scores[i].tolist()
            if noun_scores is not None:
                rec["noun_scores"] = noun_scores[i].tolist()
            self.records.append(rec)

    def finalize_metrics(self) -> Optional[Dict[str, Any]]:
        """Gather every process's part (all processes must call it). On the master process: merge them (records in
        video order), warn about skipped and partly decoded videos, and set and return ``stats``, the JSON-safe
        results (None when no video was measured); other processes return None."""
        parts = du.all_gather_object(
            (self.records, self.skipped, self.flops, self.elapsed, self.partial)
        )
        if not du.is_master():
            return None
        self.records = sorted((r for p in parts for r in p[0]), key=lambda r: r["index"])
        self.skipped = [s for p in parts for s in p[1]]
        self.partial = [s for p in parts for s in p[4]]
        self.flops = {k: sum(p[2][k] for p in parts) for k in ("executed", "paper")}
        self.elapsed = max(p[3] for p in parts)
        if self.skipped:
            logger.warning(
                "skipped %d missing or unusable videos: %s",
                len(self.skipped),
                ", ".join(s["key"] for s in self.skipped),
            )
        if self.partial:
            logger.warning(
                "partly decoded %d truncated or corrupt videos (evaluated on the frames decoded; DATA.STRICT "
                "True makes this an error): %s",
                len(self.partial),
                ", ".join(s["key"] for s in self.partial),
            )
        if not self.records:
            return None
        results = summarize(
            self.cfg,
            self.records,
            self.skipped,
            self.flops["executed"],
            self.flops["paper"],
            self.elapsed,
        )
        results["partial"] = self.partial
        self.stats = json_safe(results, reasons=undefined_reasons(results))
        return self.stats

    def log_summary(self, path: str = "") -> None:
        """One log line of the results (``path``: where they were written)."""
        r = self.stats
        if r is None:
            return
        logger.info(
            "%s %s: %d videos (%d skipped, %d partly decoded) | top1 %s top5 %s%s | %.2f videos/s | TFLOPs/video "
            "%s (paper), %s (executed)%s",
            self.cfg.TEST.DATASET,
            self.cfg.TEST.SPLIT,
            r["num_videos"],
            len(self.skipped),
            len(self.partial),
            _num(r["top1"]),
            _num(r["top5"]),
            (
                f" noun_top1 {_num(r['noun_top1'])} action_top1 {_num(r['action_top1'])}"
                if "noun_top1" in r
                else ""
            ),
            r["videos_per_second"],
            _fmt_tflops(r["tflops_per_video_paper"]),
            _fmt_tflops(r["tflops_per_video_executed"]),
            f" | results in {path}" if path else "",
        )


def undefined_reasons(results: Dict[str, Any]) -> Dict[str, str]:
    """Why a metric of ``results`` is undefined (null in the JSON)."""
    n = results.get("num_videos", 0)
    return {
        k: f"undefined: {n} videos evaluated, none with the labels this metric needs"
        for k in ("top1", "top5", "mean_class_accuracy", "noun_top1", "action_top1")
    }


def _num(value: Optional[float]) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _fmt_tflops(value: float) -> str:
    return f"{value:.4f}" if value >= 0.01 else f"{value:.3e}"


def summarize(
    cfg: CfgNode,
    records: List[Dict[str, Any]],
    skipped: List[Dict[str, str]],
    executed: int,
    measured_paper: int,
    wall: float,
) -> Dict[str, Any]:
    """Metrics and FLOPs of the gathered per-video records (the results JSON, before :func:`json_safe`)."""
    from .flops import video_flops

    n = len(records)
    scores = (
        torch.tensor([r["scores"] for r in records]) if n else torch.zeros(0, cfg.MODEL.NUM_CLASSES)
    )
    labels = torch.tensor([r["label"] for r in records], dtype=torch.long)
    noun_scores = nouns = None
    if n and "noun_scores" in records[0] and all(r["noun"] >= 0 for r in records):
        noun_scores = torch.tensor([r["noun_scores"] for r in records])
        nouns = torch.tensor([r["noun"] for r in records], dtype=torch.long)
    metrics = classification_metrics(scores, labels, noun_scores, nouns)
    per_class = {}
    if n:
        correct = scores.argmax(1) == labels
        for c in sorted(set(labels.tolist())):
            per_class[str(c)] = 100.0 * correct[labels == c].float().mean().item()
    paper = video_flops(cfg).paper.total
    results: Dict[str, Any] = {
        "dataset": cfg.TEST.DATASET,
        "split": cfg.TEST.SPLIT,
        "num_videos": n,
        "skipped": skipped,
        **metrics,
        "per_class_top1": per_class,
        "ensemble": cfg.TEST.ENSEMBLE_METHOD,
        "videos_per_second": n / wall if wall > 0 else 0.0,
        "tflops_per_video_paper": paper / 1e12,
        "tflops_per_video_executed": executed / max(n, 1) / 1e12,
        "tflops_per_video_paper_measured": measured_paper / max(n, 1) / 1e12,
        "predictions": [
            {
                "key": r["key"],
                "label": r["label"],
                "pred": int(torch.tensor(r["scores"]).argmax()),
                **r,
            }
            for r in records
        ],
    }
    return results
