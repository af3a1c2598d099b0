#!/usr/bin/env python
"""Print the FLOPs of every row of the paper's four result tables (docs/method.md §5).

For each row: the paper's number, our paper-convention number and our executed number, each as a closed form
(:mod:`rgtp.flops`) and, where the model is available, as measured by running it on the ``meta`` device
(ViTDet: :class:`rgtp.vit.PrunedViT`; ViViT: the core :class:`rgtp.cls_vit.ClsViT` spatial and temporal models,
or with ``--vivit-project`` the whole recogniser through ``rgtp_vivit.flops.video_flops``). ViTDet numbers are
GFLOPs per frame averaged over ImageNet-VID val (full-frame fraction ``rgtp.flops.VID_VAL_FULL_FRAME_FRACTION``);
ViViT numbers are TFLOPs per video (12 views). The report is :func:`rgtp.flops.table.paper_table`; see
docs/flops.md.

    python tools/count_flops.py --paper-table
    python tools/count_flops.py --paper-table --json flops.json
    python tools/count_flops.py --paper-table --no-measure      # closed forms only
    python tools/count_flops.py --paper-table --vivit-project   # ViViT via rgtp_vivit (slower)
    python tools/count_flops.py --paper-table --check           # exit 1 on any disagreement
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from rgtp.cli import run_main
from rgtp.flops.table import paper_table


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--paper-table", action="store_true", help="every row of the paper's four tables"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--no-measure", action="store_true", help="closed forms only (do not run the models)"
    )
    parser.add_argument(
        "--vivit-project",
        action="store_true",
        help="measure ViViT rows with rgtp_vivit.flops.video_flops on configs/{kinetics,epic}/*.yaml (the whole "
        "recogniser, ~2 s per row) instead of the core ClsViT models",
    )
    parser.add_argument(
        "--table",
        choices=("vitdet672", "vitdet1024", "kinetics", "epic"),
        action="append",
        help="restrict rows",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a closed form misses a published number (other than the documented keep_0215) or a "
        "measured count differs from its closed form",
    )
    args = parser.parse_args(argv)
    if not args.paper_table:
        parser.print_help()
        return 2
    vivit_project = None
    if args.vivit_project:  # the recogniser is another package: imported only when asked for
        from rgtp_vivit.flops import paper_row_flops as vivit_project
    return paper_table(
        tables=args.table,
        measure=not args.no_measure,
        vivit_project=vivit_project,
        json_path=args.json,
        check=args.check,
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
