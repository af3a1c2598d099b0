#!/usr/bin/env python
"""Map a ViTDet checkpoint onto the parameter names of the RGTP detector (detectron2 ViTDet names) and check it.

Layouts (``--layout auto`` detects them): ``detectron2`` (detectron2 model zoo ViTDet, ``frcnn_vitdet_final.pth``:
unchanged), ``ddp`` (``module.`` prefixes), ``mae`` (an MAE-pretrained bare ViT-B for training: keys get the
``backbone.net.`` prefix, the class token and final norm are dropped), ``eventful`` (the converted names of the
official RGTP / Eventful code for the ViT: ``backbone.blocks.i.qkv`` ... -> ``backbone.net.blocks.i.attn.qkv``).

    python tools/convert_vitdet_checkpoint.py IN.pth OUT.pth [--config-file configs/vid/keep512.yaml] [--partial]

With ``--config-file`` the result is checked against the model of that config: the tool lists missing, unexpected
and wrongly shaped keys and fails unless ``--partial`` is given. The output is written atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch
from rgtp_vitdet.checkpoint import convert_state_dict, detect_layout, load_state_dict_file

logger = logging.getLogger("rgtp_vitdet.convert")


def main(argv: list[str] | None = None) -> int:
    """Convert, optionally check against a config's model, and save ``{"model": state_dict}``."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument(
        "--layout", default="auto", choices=["auto", "detectron2", "ddp", "mae", "eventful"]
    )
    p.add_argument(
        "--config-file", default="", help="check the keys against the model of this config"
    )
    p.add_argument(
        "--partial", action="store_true", help="allow missing keys (e.g. backbone-only weights)"
    )
    p.add_argument("opts", nargs="*", help="config overrides KEY VALUE ...")
    args = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sd, _ = load_state_dict_file(args.input)
    sd = {k: torch.as_tensor(v) for k, v in sd.items()}
    layout = detect_layout(sd) if args.layout == "auto" else args.layout
    logger.info(f"{args.input}: {len(sd)} keys, layout {layout!r}")
    out = convert_state_dict(sd, layout)

    if args.config_file:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        from rgtp_vitdet import add_rgtp_config

        cfg = get_cfg()
        add_rgtp_config(cfg)
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.MODEL.DEVICE = (
            "meta"  # shapes only: builds a full-size model in a second, allocates nothing
        )
        with torch.device("meta"):
            model_sd = build_model(cfg).state_dict()
        missing = sorted(set(model_sd) - set(out))
        unexpected = sorted(set(out) - set(model_sd))
        shapes = sorted(
            f"{k}: checkpoint {tuple(out[k].shape)}, model {tuple(model_sd[k].shape)}"
            for k in set(out) & set(model_sd)
            if tuple(out[k].shape) != tuple(model_sd[k].shape)
        )
        for title, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrongly shaped", shapes),
        ):
            if keys:
                logger.info(f"{len(keys)} {title} keys:\n  " + "\n  ".join(keys))
        if unexpected or shapes or (missing and not args.partial):
            logger.error("the checkpoint does not fit the model; nothing written")
            return 1
    tmp = f"{args.output}.tmp.{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": out, "__author__": "rgtp_vitdet convert_vitdet_checkpoint"}, tmp)
    os.replace(tmp, args.output)
    logger.info(f"wrote {len(out)} keys to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
