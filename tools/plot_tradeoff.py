#!/usr/bin/env python
"""Accuracy vs compute trade-off curves from the evaluators' result JSONs, with the paper's points as reference.

::

    python tools/plot_tradeoff.py output/vid output/kinetics --output output/tradeoff.png   # your runs (+ paper)
    python tools/plot_tradeoff.py output/demo --output output/demo/tradeoff_from_results.png  # the demo's runs
    python tools/plot_tradeoff.py --paper --output docs/tradeoff.png                        # the paper's points

Arguments are result files or folders (searched for ``results*.json`` and the demo's ``demo_results.json``). One
panel per (task, data set, model); the paper's curve appears only beside results of the same data set and model
(``--reference never``: not at all). RGTP, the random and the change-based baselines are separate series; the x axis
starts at 0, a y axis that does not start at 0 carries a break mark, titles give the sample size. ``--flops
executed`` plots what our implementation executes instead of the paper's convention. Writes ``<output>.png`` and
``<output>.svg`` (``--no-svg``: the PNG only). The code is :mod:`rgtp_apps.tradeoff`.
"""

import argparse
import sys
from typing import List, Optional, Sequence

from rgtp_apps.tradeoff import PlotError, find_results, plot, read_points, select_reference


def get_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description="Accuracy vs GFLOPs/TFLOPs from RGTP result JSONs.")
    p.add_argument("results", nargs="*", help="result JSON files or folders holding them")
    p.add_argument(
        "--output", default="output/tradeoff.png", help="output path; .png and .svg are written"
    )
    p.add_argument(
        "--flops", choices=("paper", "executed"), default="paper", help="which FLOP count to plot"
    )
    p.add_argument(
        "--reference",
        choices=("auto", "never"),
        default="auto",
        help="auto: the paper's points beside results of the same data set and model",
    )
    p.add_argument(
        "--paper", action="store_true", help="plot all four of the paper's tables as reference"
    )
    p.add_argument(
        "--y-full", action="store_true", help="y axis from 0 to 100 (default: zoomed, marked)"
    )
    p.add_argument("--no-svg", action="store_true", help="write the PNG only")
    p.add_argument("--title", default="", help="figure title")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Read the results, plot, print the points and the written paths; exit status 2 for unusable input."""
    args = get_parser().parse_args(argv)
    try:
        files = find_results(args.results)
        if args.results and not files:
            raise PlotError(f"no results*.json under {args.results}")
        points: List = [p for f in files for p in read_points(f, args.flops)]
        mode = "all" if args.paper else args.reference
        reference = select_reference(points, mode, args.flops)
        written = plot(
            points, reference, args.output, args.flops, args.title, args.y_full, not args.no_svg
        )
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in points:
        print(
            f"{p.dataset[:26]:26s} {p.model[:24]:24s} {p.series[:26]:26s} {p.label:22s} "
            f"{p.flops:10.4g} GFLOPs {p.accuracy:6.2f}  ({p.path})"
        )
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
