"""Spatial-feature cache (docs/method.md §8.1): the pruned spatial model over a split, one ``.npz`` per video.

Each file ``<CACHE.DIR>/<split>/<key>.npz`` holds ``spatial`` float32 ``(views, T, C)`` (12×16×768 for ViViT-B),
``label``, ``noun`` and ``key``. Files are written atomically, so an interrupted run leaves only complete files, and a
rerun skips every video whose file exists. Views are the deterministic test views (no augmentation).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from fvcore.common.config import CfgNode
from tqdm import tqdm

from . import distributed as du
from .build import build_dataset
from .fileio import atomic_save_npz
from .logging_utils import setup_logging
from .test_net import _loader, build_test_model, shard_indices

logger = logging.getLogger(__name__)


def cache_dir(cfg: CfgNode) -> str:
    """``CACHE.DIR``, or ``OUTPUT_DIR/spatial_cache``."""
    return cfg.CACHE.DIR or os.path.join(cfg.OUTPUT_DIR, "spatial_cache")


def cache_path(cfg: CfgNode, split: str, key: str) -> str:
    """The cache file of one video."""
    return os.path.join(cache_dir(cfg), split, f"{key}.npz")


@torch.inference_mode()
def build_cache(cfg: CfgNode, split: str) -> Dict[str, Any]:
    """Cache the spatial features of ``split``; returns counts ``computed``, ``reused`` and ``skipped`` (videos
    that could not be decoded, listed in a warning) summed over processes."""
    device = du.device_for(cfg)
    checkpoint = cfg.CACHE.CHECKPOINT_FILE_PATH or cfg.TRAIN.CHECKPOINT_FILE_PATH
    model = build_test_model(cfg, checkpoint, device)
    dataset = build_dataset(cfg.TRAIN.DATASET, cfg, split)
    n = len(dataset) if cfg.CACHE.MAX_VIDEOS <= 0 else min(len(dataset), cfg.CACHE.MAX_VIDEOS)
    mine = shard_indices(n, du.get_rank(), du.get_world_size())
    todo = [i for i in mine if not os.path.exists(cache_path(cfg, split, dataset.records[i].key))]
    reused = len(mine) - len(todo)
    if reused:
        logger.info("%s: %d cached videos found, %d to compute", split, reused, len(todo))
    skipped: List[str] = []
    computed = 0
    for item in tqdm(
        _loader(dataset, todo, cfg),
        total=len(todo),
        desc=f"cache {split}",
        disable=not du.is_master(),
    ):
        if item["error"] is not None:
            logger.warning("skipping %s: %s", item["key"], item["error"])
            skipped.append(item["key"])
            continue
        feats = model.spatial_features(item["views"].to(device)).float().cpu().numpy()
        atomic_save_npz(
            cache_path(cfg, split, item["key"]),
            spatial=feats.astype(np.float32),
            label=np.int64(item["label"]),
            noun=np.int64(item["noun"]),
            key=np.str_(item["key"]),
        )
        computed += 1
    parts = du.all_gather_object((computed, reused, skipped))
    stats = {
        "computed": sum(p[0] for p in parts),
        "reused": sum(p[1] for p in parts),
        "skipped": [k for p in parts for k in p[2]],
    }
    if stats["skipped"]:
        logger.warning(
            "%s: skipped %d unusable videos: %s",
            split,
            len(stats["skipped"]),
            ", ".join(stats["skipped"]),
        )
    logger.info(
        "%s cache in %s: %d computed, %d reused",
        split,
        os.path.join(cache_dir(cfg), split),
        stats["computed"],
        stats["reused"],
    )
    return stats


def run_cache(cfg: CfgNode) -> Dict[str, Dict[str, Any]]:
    """Cache every split of ``CACHE.SPLITS``."""
    setup_logging(cfg.OUTPUT_DIR)
    return {split: build_cache(cfg, split) for split in cfg.CACHE.SPLITS}


class CacheDataset(torch.utils.data.Dataset):
    """Cached spatial features of a split, in the dataset's order; videos without a cache file are left out."""

    def __init__(self, cfg: CfgNode, split: str, max_videos: Optional[int] = None) -> None:
        dataset = build_dataset(cfg.TRAIN.DATASET, cfg, split)
        recs = dataset.records[:max_videos] if max_videos else dataset.records
        self.paths = [cache_path(cfg, split, r.key) for r in recs]
        missing = [p for p in self.paths if not os.path.exists(p)]
        self.paths = [p for p in self.paths if os.path.exists(p)]
        if missing:
            logger.warning("%s: %d videos have no cache file and are left out", split, len(missing))
        if not self.paths:
            raise FileNotFoundError(
                f"no cached spatial features for split {split!r} in {os.path.join(cache_dir(cfg), split)}: "
                "run with CACHE.ENABLE True first"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        with np.load(self.paths[index]) as z:
            return torch.from_numpy(z["spatial"]), int(z["label"]), int(z["noun"])
