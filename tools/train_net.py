#!/usr/bin/env python
"""Train or evaluate the RGTP ViTDet video detector on ImageNet VID (detectron2 style).

Evaluate a paper row (one process per GPU; with no GPU, N CPU processes on gloo)::

    python tools/train_net.py --config-file configs/vid/keep512.yaml --eval-only \
        MODEL.WEIGHTS checkpoints/frcnn_vitdet_final.pth
    python tools/train_net.py --config-file configs/vid/keep512.yaml --eval-only --num-gpus 8

Train the dense ViTDet (no pruning during training)::

    python tools/train_net.py --config-file configs/vid/res1024_base.yaml --num-gpus 8

Trailing ``KEY VALUE`` pairs override config keys. Results go to ``OUTPUT_DIR/inference/results_<split>.json``.
"""

from __future__ import annotations

import logging
import os

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from rgtp_vitdet import add_rgtp_config, validate_config
from rgtp_vitdet.engine import RGTPTrainer, load_weights

logger = logging.getLogger("detectron2.rgtp_vitdet.train_net")


def setup(args) -> CfgNode:
    """Build, validate and freeze the config from ``--config-file`` and the trailing overrides."""
    cfg = get_cfg()
    add_rgtp_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    validate_config(cfg)
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
        return RGTPTrainer.test(cfg, model)
    trainer = RGTPTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli() -> None:
    """Parse arguments and launch one process per device (``--num-gpus``) on each machine."""
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
