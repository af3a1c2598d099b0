#!/usr/bin/env python
"""Convert a TAdaConv "ViViT Fact. Enc." checkpoint (key ``model_state``) to this project's names.

    python tools/convert_vivit_checkpoint.py --input vivit_fac_enc_k400.pyth --output weights/vivit_b_k400.pyth \
        --cfg configs/kinetics/base.yaml

The EPIC noun head (``head.linear2``) is kept as ``noun_classifier`` (use --drop-noun-head to drop it). With --cfg the
result is loaded into the configured model, and missing or unexpected keys are listed in the error. The output is
``{"model_state": ...}``, written atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

import torch
from rgtp_vivit.build import build_model
from rgtp_vivit.checkpoint import (
    CheckpointError,
    apply_state,
    atomic_save,
    convert_tadaconv_state,
    is_tadaconv_state,
)
from rgtp_vivit.config import load_config

logger = logging.getLogger("convert_vivit_checkpoint")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Convert, optionally verify against a config, and save."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input", required=True, help="TAdaConv checkpoint (.pyth / .pth)")
    p.add_argument("--output", required=True, help="converted checkpoint to write")
    p.add_argument(
        "--cfg", default="", help="config whose model must load the result (verification)"
    )
    p.add_argument(
        "--drop-noun-head", action="store_true", help="drop head.linear2 (the EPIC noun head)"
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    ckpt = torch.load(args.input, map_location="cpu", weights_only=False)
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not is_tadaconv_state(state):
        raise CheckpointError(
            f"{args.input}: no TAdaConv ViViT model_state (keys 'backbone.*') found"
        )
    converted = convert_tadaconv_state(state, keep_noun_head=not args.drop_noun_head)
    if args.cfg:
        ns = argparse.Namespace(
            cfg_files=[args.cfg], opts=args.opts or [], num_shards=None, shard_id=None
        )
        apply_state(build_model(load_config(ns)), converted, args.input)
        logger.info("verified: the converted weights load into the model of %s", args.cfg)
    atomic_save({"model_state": converted}, args.output)
    logger.info("wrote %d tensors to %s", len(converted), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
