#!/usr/bin/env python
"""Map a ViTDet checkpoint onto the parameter names of the RGTP detector (detectron2 ViTDet names) and check it.

Layouts (``--layout auto`` detects them): ``detectron2`` (detectron2 model zoo ViTDet, ``frcnn_vitdet_final.pth``:
unchanged), ``ddp`` (``module.`` prefixes), ``mae`` (an MAE-pretrained bare ViT-B for training: keys get the
``backbone.net.`` prefix, the class token and final norm are dropped), ``eventful`` (the converted names of the
official RGTP / Eventful code for the ViT: ``backbone.blocks.i.qkv`` ... -> ``backbone.net.blocks.i.attn.qkv``).

    python tools/convert_vitdet_checkpoint.py IN.pth OUT.pth [--config-file configs/vid/keep512.yaml] [--partial]

With ``--config-file`` the result is checked against the model of that config: missing, unexpected and wrongly
shaped keys are an error listing them (missing keys are allowed with ``--partial``), and nothing is written. The
output is written atomically (:func:`rgtp_vitdet.convert.convert_checkpoint_file`). A user error prints
``error: ...`` and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rgtp_vitdet.convert import LAYOUTS, convert_checkpoint_file

from rgtp.cli import run_main


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and convert."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--layout", default="auto", choices=LAYOUTS)
    p.add_argument(
        "--config-file", default="", help="check the keys against the model of this config"
    )
    p.add_argument(
        "--partial", action="store_true", help="allow missing keys (e.g. backbone-only weights)"
    )
    p.add_argument("opts", nargs="*", help="config overrides KEY VALUE ...")
    args = p.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_checkpoint_file(
        args.input, args.output, args.layout, args.config_file, args.opts, args.partial
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
