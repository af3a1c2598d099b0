"""Multi-view test (method.md §1b, §7): every video's 12 views in one batch, view ensembling, top-1/top-5, per-class
accuracy, EPIC noun/action top-1, videos per second and TFLOPs per video; results written as JSON.

Videos are sharded over processes by index (all views of a video stay on one process) and the per-video results
are gathered, so any number of processes gives the same results as one.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional

import torch
from fvcore.common.config import CfgNode
from tqdm import tqdm

from rgtp.counting import FlopCounter

from . import distributed as du
from .build import build_dataset, build_model
from .checkpoint import load_model_state
from .fileio import atomic_write_json
from .flops import video_flops
from .logging_utils import setup_logging
from .meters import classification_metrics, ensemble_views

logger = logging.getLogger(__name__)


def shard_indices(num_items: int, rank: int, world_size: int) -> List[int]:
    """The item indices of one process: rank, rank + world, ... (whole videos)."""
    return list(range(rank, num_items, world_size))


def build_test_model(cfg: CfgNode, checkpoint: str, device: torch.device) -> torch.nn.Module:
    """The registered model in eval mode, seeded by RNG_SEED (identical random weights in every process) and
    loaded from ``checkpoint`` when given."""
    torch.manual_seed(cfg.RNG_SEED)
    model = build_model(cfg)
    if checkpoint:
        load_model_state(model, checkpoint)
        logger.info("loaded weights from %s", checkpoint)
    else:
        logger.warning("no checkpoint given: the model has random weights (seed %d)", cfg.RNG_SEED)
    return model.to(device).eval()


def _loader(dataset: Any, indices: List[int], cfg: CfgNode) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=indices, num_workers=cfg.DATA_LOADER.NUM_WORKERS
    )


@torch.inference_mode()
def test(cfg: CfgNode) -> Optional[Dict[str, Any]]:
    """Run the test of ``cfg``; the master process writes ``OUTPUT_DIR/TEST.SAVE_RESULTS_PATH`` and returns the
    results dict (other processes return None)."""
    setup_logging(cfg.OUTPUT_DIR)
    device = du.device_for(cfg)
    model = build_test_model(cfg, cfg.TEST.CHECKPOINT_FILE_PATH, device)
    dataset = build_dataset(cfg.TEST.DATASET, cfg, cfg.TEST.SPLIT)
    n = len(dataset) if cfg.TEST.MAX_VIDEOS <= 0 else min(len(dataset), cfg.TEST.MAX_VIDEOS)
    indices = shard_indices(n, du.get_rank(), du.get_world_size())
    records: List[Dict[str, Any]] = []
    skipped: List[Dict[str, str]] = []
    flops = {"executed": 0, "paper": 0}
    pending: List[Dict[str, Any]] = []

    def run(items: List[Dict[str, Any]]) -> None:
        x = torch.cat([it["views"] for it in items]).to(device)
        views = items[0]["views"].shape[0]
        with FlopCounter() as counter:
            out = model(x)
        flops["executed"] += counter.executed.total
        flops["paper"] += counter.paper.total
        logits = out["logits"].float().cpu().view(len(items), views, -1)
        scores = ensemble_views(logits, cfg.TEST.ENSEMBLE_METHOD)
        noun = out.get("noun_logits")
        noun_scores = None
        if noun is not None:
            noun_scores = ensemble_views(
                noun.float().cpu().view(len(items), views, -1), cfg.TEST.ENSEMBLE_METHOD
            )
        for i, it in enumerate(items):
            rec = {"index": it["index"], "key": it["key"], "label": it["label"], "noun": it["noun"]}
            rec["scores"] = scores[i].tolist()
            if noun_scores is not None:
                rec["noun_scores"] = noun_scores[i].tolist()
            records.append(rec)

    start = time.perf_counter()
    for item in tqdm(
        _loader(dataset, indices, cfg), total=len(indices), desc="test", disable=not du.is_master()
    ):
        if item["error"] is not None:
            logger.warning("skipping %s: %s", item["key"], item["error"])
            skipped.append({"key": item["key"], "error": item["error"]})
            continue
        pending.append(item)
        if len(pending) == cfg.TEST.BATCH_SIZE:
            run(pending)
            pending = []
    if pending:
        run(pending)
    elapsed = time.perf_counter() - start

    parts = du.all_gather_object((records, skipped, flops, elapsed))
    if not du.is_master():
        return None
    records = sorted((r for p in parts for r in p[0]), key=lambda r: r["index"])
    skipped = [s for p in parts for s in p[1]]
    executed = sum(p[2]["executed"] for p in parts)
    measured_paper = sum(p[2]["paper"] for p in parts)
    wall = max(p[3] for p in parts)
    if skipped:
        logger.warning(
            "skipped %d missing or unusable videos: %s",
            len(skipped),
            ", ".join(s["key"] for s in skipped),
        )
    results = summarize(cfg, records, skipped, executed, measured_paper, wall)
    path = os.path.join(cfg.OUTPUT_DIR, cfg.TEST.SAVE_RESULTS_PATH)
    atomic_write_json(results, path)
    logger.info(
        "%s %s: %d videos (%d skipped) | top1 %.2f top5 %.2f%s | %.2f videos/s | TFLOPs/video %s (paper), "
        "%s (executed) | results in %s",
        cfg.TEST.DATASET,
        cfg.TEST.SPLIT,
        results["num_videos"],
        len(skipped),
        results["top1"],
        results["top5"],
        (
            f" noun_top1 {results['noun_top1']:.2f} action_top1 {results['action_top1']:.2f}"
            if "noun_top1" in results
            else ""
        ),
        results["videos_per_second"],
        _fmt_tflops(results["tflops_per_video_paper"]),
        _fmt_tflops(results["tflops_per_video_executed"]),
        path,
    )
    return results


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
    """Metrics and FLOPs of the gathered per-video records."""
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
