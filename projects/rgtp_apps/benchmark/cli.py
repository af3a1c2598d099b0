"""The benchmark's command line: :func:`build_parser` and :func:`main` (``tools/benchmark.py`` calls them)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Union

import torch

from rgtp.timing import CAPTURE_MODES, COMPILE_MODES

from .baseline import import_core, markdown_baseline
from .cases import MODELS
from .report import markdown, markdown_video, write
from .timing import run_case, run_video_case

LOG = logging.getLogger("rgtp.benchmark")


def build_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The arguments of ``tools/benchmark.py``."""
    p = argparse.ArgumentParser(
        description=description or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=sorted(MODELS), default="vitdet-backbone")
    p.add_argument("--size", type=int, default=672, help="padded input side (672 or 1024)")
    p.add_argument(
        "--keep", type=int, nargs="+", default=[512], help="kept tokens K on pruned frames"
    )
    p.add_argument(
        "--rollout",
        choices=["forward", "backward"],
        default=None,
        help="default: pooled forward at 672, backward at 1024 (the paper's settings)",
    )
    p.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[1],
        help="streams processed side by side (several: one row each)",
    )
    p.add_argument("--views", type=int, default=12, help="ViViT views per video, batched")
    p.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        nargs="+",
        default=["fp32"],
        help="several: one row each",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    p.add_argument(
        "--capture",
        choices=CAPTURE_MODES,
        default="none",
        help="how the timed frames run: eager (none); torch.compile of the model forward and rollout update "
        "(compile; fullgraph=False); or the dense and pruned frames captured as CUDA graphs (cudagraph, CUDA "
        "only; full frames stay eager). Both use the static pruned path (window_kept_only off), include the "
        "compilation/capture in the untimed warm-up and check once that the pruned frame matches eager",
    )
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend for --capture compile (inductor; aot_eager or eager without a C++ compiler)",
    )
    p.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="auto",
        help="inductor mode; auto: reduce-overhead (CUDA graphs) on a GPU, default on the CPU",
    )
    p.add_argument(
        "--incremental-head",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="vitdet-detector: MODEL.RGTP.INCREMENTAL_HEAD (pruned frames recompute the pyramid and the RPN "
        "convolutions only where the kept tokens change them)",
    )
    p.add_argument(
        "--opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="vitdet-detector: more config overrides (e.g. a smaller model), after the benchmark's own",
    )
    p.add_argument(
        "--compare-to",
        default=None,
        metavar="REV",
        help="vitdet-backbone, eager: also time the core (rgtp/) of git revision REV in the same run, on the "
        "same weights and frames, every call interleaved (a second table; JSON baseline_*, time_vs_baseline_*)",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--out", default="output/benchmark", help="folder for benchmark.json and benchmark.md"
    )
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Resolve defaults that depend on other arguments and reject combinations that cannot run."""
    if args.rollout is None:
        args.rollout = "forward" if args.size == 672 else "backward"
    if args.capture != "none" and args.model != "vitdet-backbone":
        p.error(f"--capture {args.capture} is implemented for --model vitdet-backbone only")
    if args.compare_to and (args.model != "vitdet-backbone" or args.capture != "none"):
        p.error(
            f"--compare-to is implemented for --model vitdet-backbone with --capture none "
            f"(got --model {args.model} --capture {args.capture})"
        )
    if args.compare_to:
        try:  # extracted and imported once here (cached): a revision git cannot give fails before any timing
            import_core(args.compare_to)
        except ValueError as e:
            p.error(str(e))
    if args.capture == "cudagraph" and torch.device(args.device).type != "cuda":
        p.error(
            f"--capture cudagraph needs a CUDA device (got --device {args.device}); "
            f"use --capture compile on the CPU"
        )


def run(args: argparse.Namespace) -> List[dict]:
    """Run every keep setting, write JSON + Markdown under ``args.out``, print the table; returns the rows."""
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for dtype in _listed(args.dtype):
        for batch in _listed(args.batch):
            one = argparse.Namespace(**{**vars(args), "dtype": dtype, "batch": batch})
            for keep in args.keep:
                LOG.info(
                    "benchmarking %s size=%d keep=%d batch=%d %s",
                    args.model,
                    args.size,
                    keep,
                    batch,
                    dtype,
                )
                rows.append(
                    run_video_case(one, keep) if args.model == "vivit" else run_case(one, keep)
                )
    table = markdown_video(rows) if args.model == "vivit" else markdown(rows)
    if any("baseline_rev" in r for r in rows):
        table += "\n\n" + markdown_baseline(rows)
    write(Path(args.out), rows, table, args.device)
    print(table)
    return rows


def _listed(v: Union[List, int, str]) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def main(argv: Optional[List[str]] = None, description: Optional[str] = None) -> List[dict]:
    """Parse ``argv``, check it, run."""
    p = build_parser(description)
    args = p.parse_args(argv)
    check_args(p, args)
    return run(args)
