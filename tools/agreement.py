#!/usr/bin/env python
"""Agreement without labels: dense vs pruned (and baselines) on your own videos (``rgtp_apps.agreement``).

    python tools/agreement.py --task detection clip.mp4 --output out/agreement --baselines random change
    python tools/agreement.py --task recognition clip.mp4 frames_dir/ --output out/agreement_rec

Detection: AP50 of the pruned detections against the dense detections with score >= --score-thresh, mean IoU of the
matched boxes, the share of dense detections recovered, backbone GFLOPs per frame and the speed-up. Recognition:
top-1 agreement, top-5 overlap and KL(dense || pruned), GFLOPs per video and the speed-up. Writes
OUTPUT/agreement.json, OUTPUT/agreement.md and one plot per video; prints the Markdown table. The demo models are
the default (configs/demo/vid_keep64.yaml, configs/demo/kin_keep14.yaml). Errors: ``error: ...``, exit status 2
(``--debug`` shows the traceback). See docs/agreement.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import List, Optional, Sequence

from rgtp.cli import run_main


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return v


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Dense vs pruned agreement on any video, without labels (docs/agreement.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "videos", nargs="+", help="video files (any PyAV-readable format) or frame folders"
    )
    p.add_argument("--task", choices=("detection", "recognition"), default="detection")
    p.add_argument("--output", required=True, help="folder for agreement.json, agreement.md, plots")
    p.add_argument(
        "--config-file",
        default=None,
        help="the pruned config (default: configs/demo/vid_keep64.yaml or configs/demo/kin_keep14.yaml)",
    )
    p.add_argument("--weights", default=None, help="checkpoint (default: the config's)")
    p.add_argument(
        "--baselines", nargs="*", default=[], choices=("random", "change"), help="also run these"
    )
    p.add_argument(
        "--score-thresh", type=float, default=0.5, help="detection: dense pseudo-GT score"
    )
    p.add_argument("--max-frames", type=positive_int, default=None, help="frames per video at most")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads of torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="no per-video plots")
    p.add_argument(
        "--opts", nargs="*", default=[], help="KEY VALUE config overrides (every method)"
    )
    # the pruned model's (and baselines') own overrides, e.g. RGTP off for a dense-vs-dense check
    p.add_argument("--pruned-opts", nargs="*", default=[], help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = get_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed "error: ..." (exit 2) or --help (exit 0)
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*torch.meshgrid.*")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rgtp_apps.agreement import run_agreement

    report = run_agreement(
        args.task,
        args.videos,
        args.output,
        config_file=args.config_file,
        weights=args.weights,
        baselines=args.baselines,
        score_thresh=args.score_thresh,
        max_frames=args.max_frames,
        opts=args.opts,
        pruned_opts=args.pruned_opts,
        device=args.device,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    with open(report["outputs"]["markdown"]) as f:
        print(f.read(), end="")
    paths: List[str] = [report["outputs"]["json"], report["outputs"]["markdown"]]
    print("wrote " + ", ".join(paths + report["outputs"]["plots"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
