#!/usr/bin/env python
"""Accuracy vs compute trade-off curves from the evaluators' result JSONs, with the paper's points as reference.

Detection results (``tools/train_net.py --eval-only``: ``OUTPUT_DIR/inference/results_<split>.json``) give mAP50
(``bbox.AP50``, the paper's metric) against backbone GFLOPs per frame; recognition results (``tools/vivit_net.py``:
``OUTPUT_DIR/results.json``) give top-1 against TFLOPs per video. Each point is labelled with its config name (the
folder of the result, e.g. ``output/vid/keep512`` -> ``keep512``)::

    python tools/plot_tradeoff.py output/vid output/kinetics --output docs/tradeoff.png
    python tools/plot_tradeoff.py --paper --output docs/tradeoff.png      # the published points only

Arguments are result files or folders (searched recursively for ``results*.json``). Points are grouped into series
by data set (ImageNet VID at 672 and 1024 are told apart by the ``res1024`` config prefix); ``--flops executed``
plots what our implementation executes instead of the paper's convention. For the real data sets the paper's
published points (FLOPs from ``rgtp.flops.PAPER_ROWS``, accuracies from the paper's tables) are drawn as a dashed
grey reference series; ``--reference never`` leaves them out, and series whose path or split name contains
``demo`` never get one. Writes ``<output>.png`` and ``<output>.svg`` (each written to a temporary name and renamed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("rgtp.plot_tradeoff")

#: The paper's published accuracies (mAP50 % for ImageNet VID, top-1 % for Kinetics-400 and EPIC-Kitchens-100 verbs),
#: keyed like rgtp.flops.PAPER_ROWS (table, config); the FLOPs come from PAPER_ROWS.
PAPER_ACCURACY: Dict[Tuple[str, str], float] = {
    ("vitdet672", "baseline"): 82.28,
    ("vitdet672", "res672_keep768"): 82.37,
    ("vitdet672", "res672_keep512"): 82.39,
    ("vitdet672", "res672_keep384"): 82.38,
    ("vitdet672", "res672_keep196"): 82.06,
    ("vitdet672", "res672_keep64"): 80.53,
    ("vitdet1024", "baseline"): 82.93,
    ("vitdet1024", "res1024_keep2200"): 83.08,
    ("vitdet1024", "res1024_keep1400"): 83.04,
    ("vitdet1024", "res1024_keep750"): 83.04,
    ("vitdet1024", "res1024_keep400"): 82.68,
    ("vitdet1024", "res1024_keep75"): 80.03,
    ("kinetics", "baseline"): 79.06,
    ("kinetics", "keep_049"): 78.00,
    ("kinetics", "keep_0215"): 75.93,
    ("kinetics", "keep_0066"): 75.50,
    ("epic", "baseline"): 67.14,
    ("epic", "fg_300_bg_025"): 68.13,
    ("epic", "fg_180_bg_016"): 67.70,
    ("epic", "fg_120_bg_005"): 67.40,
    ("epic", "fg_160s05_bg_009"): 66.35,
    ("epic", "fg_96s05_bg_003"): 64.27,
    ("epic", "fg_28s05_bg_00"): 63.79,
}

TABLE_TITLES = {
    "vitdet672": "ImageNet VID, 672",
    "vitdet1024": "ImageNet VID, 1024",
    "kinetics": "Kinetics-400",
    "epic": "EPIC-Kitchens-100 (verbs)",
}


@dataclass
class Point:
    """One evaluated configuration."""

    series: str
    label: str
    flops: float
    accuracy: float
    unit: str  # "G" (per frame) or "T" (per video)
    metric: str
    table: Optional[str]  # the paper table of a real data set, None for others (e.g. demo data)
    path: str


class PlotError(RuntimeError):
    """A result file cannot be used; the message names it."""


def find_results(paths: Sequence[str]) -> List[str]:
    """Result JSON files among ``paths`` (files as given, folders searched recursively for ``results*.json``)."""
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in sorted(os.walk(p)):
                out += [
                    os.path.join(root, f)
                    for f in sorted(files)
                    if f.startswith("results") and f.endswith(".json")
                ]
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise PlotError(f"result path {p!r} does not exist")
    return out


def _config_label(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(folder) == "inference":
        folder = os.path.dirname(folder)
    return os.path.basename(folder)


def read_point(path: str, flops: str = "paper") -> Point:
    """Parse one detection or recognition result JSON into a :class:`Point`."""
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise PlotError(f"cannot read result file {path!r}: {e}") from e
    label = _config_label(path)
    demo = "demo" in path.lower()
    if isinstance(res, dict) and isinstance(res.get("bbox"), dict):
        b = res["bbox"]
        key = f"gflops_{flops}"
        if "AP50" not in b or key not in b:
            raise PlotError(f"detection result {path!r} lacks bbox.AP50 or bbox.{key}")
        split = os.path.splitext(os.path.basename(path))[0].replace("results_", "")
        demo = demo or "demo" in split
        size = "1024" if label.startswith("res1024") else "672"
        table = None if demo else f"vitdet{size}"
        series = TABLE_TITLES[table] if table else f"{split} (detection)"
        return Point(series, label, float(b[key]), float(b["AP50"]), "G", "mAP50 (%)", table, path)
    if isinstance(res, dict) and "top1" in res:
        key = f"tflops_per_video_{flops}"
        if key not in res:
            raise PlotError(f"recognition result {path!r} lacks {key}")
        dataset = str(res.get("dataset", "recognition"))
        split = str(res.get("split", ""))
        demo = demo or "demo" in split.lower()
        table = (
            None if demo else {"kinetics": "kinetics", "epickitchens": "epic"}.get(dataset.lower())
        )
        series = TABLE_TITLES[table] if table else f"{dataset} {split}".strip()
        return Point(
            series, label, float(res[key]), float(res["top1"]), "T", "top-1 (%)", table, path
        )
    raise PlotError(
        f"{path!r} is neither a detection result (bbox.AP50) nor a recognition result (top1)"
    )


def paper_points() -> List[Point]:
    """The paper's published points: FLOPs from rgtp.flops.PAPER_ROWS, accuracy from :data:`PAPER_ACCURACY`."""
    from rgtp.flops import PAPER_ROWS

    pts = []
    for row in PAPER_ROWS:
        acc = getattr(row, "accuracy", None) or PAPER_ACCURACY.get((row.table, row.config))
        if acc is None:
            continue
        metric = "mAP50 (%)" if row.is_vitdet else "top-1 (%)"
        pts.append(
            Point(
                TABLE_TITLES[row.table],
                row.config,
                row.published,
                acc,
                row.unit,
                metric,
                row.table,
                "",
            )
        )
    return pts


def _xlabel(unit: str, flops: str) -> str:
    conv = "paper convention" if flops == "paper" else "executed"
    return f"backbone GFLOPs per frame ({conv})" if unit == "G" else f"TFLOPs per video ({conv})"


def plot(
    points: Sequence[Point],
    reference: Sequence[Point],
    output: str,
    flops: str = "paper",
    title: str = "",
) -> List[str]:
    """Draw one panel per series (ours: solid, labelled; paper: dashed grey) and write PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: "OrderedDict[str, Tuple[List[Point], List[Point]]]" = OrderedDict()
    for p in points:
        panels.setdefault(p.series, ([], []))[0].append(p)
    for p in reference:
        panels.setdefault(p.series, ([], []))[1].append(p)
    if not panels:
        raise PlotError("nothing to plot: no result files and no reference points")
    n = len(panels)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, (ours, ref)) in zip(axes.flat, panels.items()):
        if ref:
            ref = sorted(ref, key=lambda p: p.flops)
            ax.plot(
                [p.flops for p in ref],
                [p.accuracy for p in ref],
                "o--",
                color="0.55",
                mfc="white",
                label="paper (published)",
            )
        if ours:
            ours = sorted(ours, key=lambda p: p.flops)
            ax.plot(
                [p.flops for p in ours],
                [p.accuracy for p in ours],
                "o-",
                color="#d9480f",
                label="this run",
            )
            for i, p in enumerate(ours):
                ax.annotate(
                    p.label,
                    (p.flops, p.accuracy),
                    textcoords="offset points",
                    xytext=(4, 4 if i % 2 else -10),
                    fontsize=7,
                )
        elif ref:
            for i, p in enumerate(ref):
                short = p.label.replace("res672_", "").replace("res1024_", "")
                ax.annotate(
                    short,
                    (p.flops, p.accuracy),
                    textcoords="offset points",
                    xytext=(4, 4 if i % 2 else -10),
                    fontsize=7,
                )
        first = (ours or ref)[0]
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(_xlabel(first.unit, flops), fontsize=8)
        ax.set_ylabel(first.metric, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    stem = output[: -len(os.path.splitext(output)[1])] if os.path.splitext(output)[1] else output
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    written = []
    for ext, kw in ((".png", {"dpi": 110}), (".svg", {})):
        path = stem + ext
        tmp = f"{os.path.dirname(os.path.abspath(path))}/.{os.path.basename(path)}.tmp-{os.getpid()}{ext}"
        try:
            fig.savefig(tmp, format=ext[1:], **kw)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        written.append(path)
    plt.close(fig)
    return written


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
        help="auto: the paper's points beside every real data set's series",
    )
    p.add_argument(
        "--paper", action="store_true", help="plot all four of the paper's tables as reference"
    )
    p.add_argument("--title", default="", help="figure title")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Read the results, plot, print the written paths; exit status 2 with a message for unusable input."""
    args = get_parser().parse_args(argv)
    try:
        files = find_results(args.results)
        if args.results and not files:
            raise PlotError(f"no results*.json under {args.results}")
        points = [read_point(f, args.flops) for f in files]
        reference: List[Point] = []
        if args.paper or args.reference == "auto":
            tables = {p.table for p in points if p.table}
            reference = [r for r in paper_points() if args.paper or r.table in tables]
        written = plot(points, reference, args.output, args.flops, args.title)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in points:
        print(
            f"{p.series:28s} {p.label:24s} {p.flops:10.4g} {p.unit}FLOPs  {p.accuracy:6.2f}  ({p.path})"
        )
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
