#!/usr/bin/env python
"""Train or evaluate the RGTP ViTDet video detector on ImageNet VID (detectron2 style).

Evaluate a paper row (one process per GPU; with no GPU, N CPU processes on gloo)::

    python tools/train_net.py --config-file configs/vid/keep512.yaml --eval-only \
        MODEL.WEIGHTS checkpoints/frcnn_vitdet_final.pth
    python tools/train_net.py --config-file configs/vid/keep512.yaml --eval-only --num-gpus 8

Train the dense ViTDet (no pruning during training)::

    python tools/train_net.py --config-file configs/vid/res1024_base.yaml --num-gpus 8

Trailing ``KEY VALUE`` pairs override config keys. Results go to ``OUTPUT_DIR/inference/results_<split>.json``.
A user error (a bad config key or value, missing data or weights, an evaluation that measured nothing) prints one
line ``error: ...`` and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from rgtp_vitdet.config import load_config
from rgtp_vitdet.engine import RGTPTrainer, check_measured, load_weights, resolve_weights

from rgtp.cli import run_main

logger = logging.getLogger("detectron2.rgtp_vitdet.train_net")


def build_cfg(args) -> CfgNode:
    """The validated config of ``--config-file`` and the trailing overrides (:func:`rgtp_vitdet.config.load_config`;
    a bad file, key or value raises :class:`rgtp.config.ConfigError` naming it), with the weights resolved.
    """
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = resolve_weights(cfg, args.config_file)
    return cfg


def setup(args) -> CfgNode:
    """Build, validate and freeze the config from ``--config-file`` and the trailing overrides."""
    cfg = build_cfg(args)
    cfg.freeze()
    default_setup(cfg, args)
    if cfg.MODEL.DEVICE == "cpu":
        # Share the cores between the processes of this machine instead of oversubscribing them.
        local = max(1, comm.get_local_size())
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return cfg


def main(args) -> dict:
    """Evaluate (``--eval-only``) or train."""
    cfg = setup(args)
    if args.eval_only:
        model = RGTPTrainer.build_model(cfg)
        load_weights(cfg, model)
        results = RGTPTrainer.test(cfg, model)
        if comm.is_main_process():
            names = list(cfg.DATASETS.TEST)
            check_measured(results if len(names) > 1 else {names[0]: results})
        return results
    trainer = RGTPTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None) -> int:
    """Parse arguments, check the config and launch one process per device (``--num-gpus``) on each machine."""
    args = default_argument_parser().parse_args(argv)
    build_cfg(args)  # a bad config is one error line here, before any process starts
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(cli))
