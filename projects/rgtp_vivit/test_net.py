"""Multi-view test (docs/method.md §1b, §7): every video's 12 views in one batch, view ensembling, top-1/top-5, per-class
accuracy, EPIC noun/action top-1, videos per second and TFLOPs per video; results written as JSON.

Videos are sharded over processes by index (all views of a video stay on one process) and the per-video results
are gathered, so any number of processes gives the same results as one.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, List, Optional

import torch
from fvcore.common.config import CfgNode
from tqdm import tqdm

from rgtp.cli import UserError
from rgtp.counting import FlopCounter

from . import distributed as du
from .build import build_dataset, build_model
from .checkpoint import load_model_state
from .fileio import atomic_write_json
from .logging_utils import setup_logging
from .meters import TestMeter, summarize

logger = logging.getLogger(__name__)

__all__ = ["test", "perform_test", "build_test_model", "shard_indices", "summarize", "TestMeter"]


def shard_indices(num_items: int, rank: int, world_size: int) -> List[int]:
    """The item indices of one process: rank, rank + world, ... (whole videos)."""
    return list(range(rank, num_items, world_size))


def build_test_model(cfg: CfgNode, checkpoint: str, device: torch.device) -> torch.nn.Module:
    """The registered model in eval mode, seeded by RNG_SEED (identical random weights in every process) and
    loaded from ``checkpoint`` when given."""
    torch.manual_seed(cfg.RNG_SEED)
    model = build_model(cfg)
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(
                f"checkpoint {checkpoint!r} (TEST/CACHE/TRAIN.CHECKPOINT_FILE_PATH) not found: looked at "
                f"{os.path.abspath(checkpoint)!r} (relative paths: the working directory, then the repository "
                f"root); fix the path or pass TEST.CHECKPOINT_FILE_PATH '' for random weights"
            )
        load_model_state(model, checkpoint)
        logger.info("loaded weights from %s", checkpoint)
    else:
        logger.warning("no checkpoint given: the model has random weights (seed %d)", cfg.RNG_SEED)
    return model.to(device).eval()


def _loader(dataset: Any, indices: List[int], cfg: CfgNode) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=indices, num_workers=cfg.DATA_LOADER.NUM_WORKERS
    )


def test(cfg: CfgNode) -> Optional[Dict[str, Any]]:
    """Run the test of ``cfg`` (PySlowFast's ``test``: set-up, :func:`perform_test`, results): the master process
    writes ``OUTPUT_DIR/TEST.SAVE_RESULTS_PATH`` and returns the results dict (other processes return None). No
    usable video raises :class:`rgtp.cli.UserError` saying where the videos were looked for."""
    setup_logging(cfg.OUTPUT_DIR)
    device = du.device_for(cfg)
    model = build_test_model(cfg, cfg.TEST.CHECKPOINT_FILE_PATH, device)
    dataset = build_dataset(cfg.TEST.DATASET, cfg, cfg.TEST.SPLIT)
    n = len(dataset) if cfg.TEST.MAX_VIDEOS <= 0 else min(len(dataset), cfg.TEST.MAX_VIDEOS)
    loader = _loader(dataset, shard_indices(n, du.get_rank(), du.get_world_size()), cfg)
    meter = perform_test(loader, model, TestMeter(cfg, n), cfg)
    if not du.is_master():
        return None
    if meter.stats is None:
        raise UserError(nothing_measured_message(cfg, dataset, meter.skipped, n))
    path = os.path.join(cfg.OUTPUT_DIR, cfg.TEST.SAVE_RESULTS_PATH)
    atomic_write_json(meter.stats, path)
    meter.log_summary(path)
    return meter.stats


@torch.inference_mode()
def perform_test(
    test_loader: Iterable[Dict[str, Any]],
    model: torch.nn.Module,
    test_meter: TestMeter,
    cfg: CfgNode,
) -> TestMeter:
    """The test loop (PySlowFast's ``perform_test``): the usable videos of ``test_loader`` (each with all its
    views) go through ``model`` in batches of ``TEST.BATCH_SIZE`` videos under the FLOP counter; ``test_meter``
    receives the predictions and the skipped and partly decoded videos, and is finalised (gathered over the
    processes) and returned."""
    device = next(model.parameters()).device
    pending: List[Dict[str, Any]] = []

    def run(items: List[Dict[str, Any]]) -> None:
        x = torch.cat([it["views"] for it in items]).to(device)
        with FlopCounter() as counter:
            out = model(x)
        test_meter.update_stats(
            items,
            out["logits"],
            out.get("noun_logits"),
            counter.executed.total,
            counter.paper.total,
        )

    test_meter.iter_tic()
    total = len(test_loader) if hasattr(test_loader, "__len__") else None
    for item in tqdm(test_loader, total=total, desc="test", disable=not du.is_master()):
        if item["error"] is not None:
            test_meter.skip(item["key"], item["error"])
            continue
        if item.get("partial"):
            test_meter.add_partial(item["key"], item["partial"])
        pending.append(item)
        if len(pending) == cfg.TEST.BATCH_SIZE:
            run(pending)
            pending = []
    if pending:
        run(pending)
    test_meter.iter_toc()
    test_meter.finalize_metrics()
    return test_meter


def nothing_measured_message(
    cfg: CfgNode, dataset: Any, skipped: List[Dict[str, str]], n: int
) -> str:
    """What an evaluation with no usable video looked for, and where."""
    where = getattr(dataset, "video_dir", "") or getattr(dataset, "root", "")
    first = skipped[0]["error"] if skipped else ""
    if n == 0:
        what = f"the annotations of {cfg.TEST.DATASET} {cfg.TEST.SPLIT!r} list no video"
    else:
        what = f"all {n} videos of {cfg.TEST.DATASET} {cfg.TEST.SPLIT!r} are missing or unusable"
    return (
        f"nothing was measured: {what}; looked for the videos in {where} (DATA.PATH_TO_DATA_DIR="
        f"{cfg.DATA.PATH_TO_DATA_DIR!r} + DATA.VIDEO_DIR={cfg.DATA.VIDEO_DIR!r}, see docs/recognition.md)"
        + (f"; first problem: {first}" if first else "")
    )
