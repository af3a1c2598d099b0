"""The recogniser part of the embedded demo: the small ViViT (``configs/demo/kin_*.yaml``) evaluated on the demo
Kinetics val set through the ViViT test loop (``rgtp_vivit.test_net.test``), timed around the test model's forward
pass."""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from rgtp.cli import repo_root

from .demo_detection import repo_path, require_checkpoint

__all__ = ["REC_CONFIGS", "evaluate_recognition"]

logger = logging.getLogger("rgtp.demo")

#: (row name, config file, weights or None = the config's own); the first row is the dense reference.
REC_CONFIGS: List[Tuple[str, str, Optional[str]]] = [
    ("dense", "configs/demo/kin_base.yaml", None),
    # the pruned spatial model with the dense model's temporal weights: what the fine-tune buys
    ("rgtp_keep14_no_ft", "configs/demo/kin_keep14.yaml", "models/demo/vivit_demo.pyth"),
    ("rgtp_keep14", "configs/demo/kin_keep14.yaml", None),
    ("change_keep14", "configs/demo/kin_keep14_change.yaml", None),
    ("random_keep14", "configs/demo/kin_keep14_random.yaml", None),
]


class _ForwardTimer:
    """Accumulates the wall time of a module's forward passes (pre/post hooks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._t0 = 0.0

    def attach(self, module: torch.nn.Module) -> torch.nn.Module:
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)
        return module

    def _pre(self, *_: Any) -> None:
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1


def evaluate_recognition(
    kinetics_dir: str,
    out_dir: str,
    max_videos: int,
    configs: Sequence[Tuple[str, str, Optional[str]]] = REC_CONFIGS,
    on_row: Any = None,
) -> List[Dict[str, Any]]:
    """Evaluate every recognition config on the demo Kinetics val set through the ViViT test loop; one row per
    config. ``on_row(row)`` is called after each."""
    from rgtp_vivit import test_net
    from rgtp_vivit.config import assert_and_infer_cfg, get_cfg
    from rgtp_vivit.flops import kept_counts

    rows = []
    original_build = test_net.build_test_model
    for name, config, weights in configs:
        cfg = get_cfg()
        with warnings.catch_warnings():
            # yacs literal_eval()s values like "1in2"
            warnings.simplefilter("ignore", SyntaxWarning)
            cfg.merge_from_file(repo_path(config))
        cfg.DATA.PATH_TO_DATA_DIR = kinetics_dir
        cfg.OUTPUT_DIR = os.path.join(out_dir, name)
        cfg.TEST.MAX_VIDEOS = max_videos
        cfg.NUM_GPUS = 0
        cfg.TEST.CHECKPOINT_FILE_PATH = repo_path(weights or cfg.TEST.CHECKPOINT_FILE_PATH)
        assert_and_infer_cfg(cfg)
        require_checkpoint(cfg.TEST.CHECKPOINT_FILE_PATH)
        timer = _ForwardTimer()

        def _timed(*a: Any, _t: _ForwardTimer = timer, **k: Any) -> torch.nn.Module:
            return _t.attach(original_build(*a, **k))

        test_net.build_test_model = _timed
        try:
            start = time.perf_counter()
            res = test_net.test(cfg)
            wall = time.perf_counter() - start
        finally:
            test_net.build_test_model = original_build
        if res is None:
            raise RuntimeError(f"{config}: the test returned no results")
        kept = kept_counts(cfg)
        n = (cfg.DATA.TEST_CROP_SIZE // cfg.VIVIT.PATCH_SIZE) ** 2
        pruned = kept[1:] if cfg.RGTP.ENABLE and len(kept) > 1 else kept
        k = min(pruned)
        videos = int(res["num_videos"])
        rows.append(
            {
                "config": name,
                "config_file": config,
                "weights": os.path.relpath(cfg.TEST.CHECKPOINT_FILE_PATH, repo_root()),
                "selection": cfg.RGTP.SELECTION if cfg.RGTP.ENABLE else "dense",
                "tokens": n,
                "kept_tokens": int(k),
                "kept_fraction": k / n,
                "kept_per_tubelet": [int(x) for x in kept],
                "videos": videos,
                "views_per_video": cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS,
                "top1": res["top1"] / 100.0,
                "gflops_paper": res["tflops_per_video_paper"] * 1e3,
                "gflops_executed": res["tflops_per_video_executed"] * 1e3,
                "ms_per_clip": 1000.0 * timer.seconds / max(1, videos),
                "wall_s": wall,
            }
        )
        logger.info("recognition %s: %s", name, rows[-1])
        if on_row is not None:
            on_row(rows[-1])
    return rows
