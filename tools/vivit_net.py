#!/usr/bin/env python
"""Entry point of the RGTP ViViT recogniser (PySlowFast style).

    python tools/vivit_net.py --cfg configs/kinetics/keep_049.yaml TEST.CHECKPOINT_FILE_PATH weights.pyth

Stages, in order, each through ``launch_job`` (NUM_GPUS processes per machine):
CACHE.ENABLE (spatial-feature cache over CACHE.SPLITS) → TRAIN.ENABLE (temporal fine-tune on the cache) →
TEST.ENABLE (multi-view test; prints accuracy and TFLOPs per video, writes OUTPUT_DIR/results.json).

A user error (bad config key or value, missing or unusable data, nothing measured) prints one line
``error: ...`` and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from rgtp_vivit.cache import run_cache
from rgtp_vivit.config import load_config, parse_args
from rgtp_vivit.distributed import launch_job
from rgtp_vivit.logging_utils import setup_logging
from rgtp_vivit.test_net import test
from rgtp_vivit.train_net import train

from rgtp.cli import run_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line, load the config and run the enabled stages."""
    args = parse_args(argv)
    cfg = load_config(args)
    setup_logging(cfg.OUTPUT_DIR)
    if cfg.CACHE.ENABLE:
        launch_job(cfg, args.init_method, run_cache)
    if cfg.TRAIN.ENABLE:
        launch_job(cfg, args.init_method, train)
    if cfg.TEST.ENABLE:
        launch_job(cfg, args.init_method, test)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
