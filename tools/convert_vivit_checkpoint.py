#!/usr/bin/env python
"""Convert a TAdaConv "ViViT Fact. Enc." checkpoint (key ``model_state``) to this project's names.

    python tools/convert_vivit_checkpoint.py --input vivit_fac_enc_k400.pyth \
        --output checkpoints/vivit_b_kinetics400.pyth --cfg configs/kinetics/base.yaml

The EPIC noun head (``head.linear2``) is kept as ``noun_classifier`` (use --drop-noun-head to drop it). With --cfg the
result is loaded into the configured model, and missing or unexpected keys are listed in the error. The output is
``{"model_state": ...}``, written atomically (:func:`rgtp_vivit.convert.convert_checkpoint_file`). A user error prints
one line ``error: ...`` and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from rgtp_vivit.convert import convert_checkpoint_file

from rgtp.cli import run_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line and convert."""
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
    convert_checkpoint_file(args.input, args.output, args.cfg, args.opts or [], args.drop_noun_head)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
