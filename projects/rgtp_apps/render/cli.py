"""The command line of ``tools/demo_video.py`` (detectron2 demo style): :func:`get_parser` and :func:`main`."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from rgtp.cli import positive_float

from .layout import MIN_SIDE
from .run import GIF_MAX_SIZE, render_video
from .source import DemoError
from .writer import GIF_COLORS

__all__ = ["get_parser", "main"]


def _count(name: str, low: int = 0, high: Optional[int] = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if v < low or (high is not None and v > high):
            allowed = (
                f"a whole number >= {low}" if high is None else f"a whole number in {low}..{high}"
            )
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {text!r}")
        return v

    return parse


def get_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        description="RGTP video demo: kept tokens, rollout heatmaps, detections/classes."
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to the config file")
    p.add_argument(
        "--input",
        required=True,
        help="a video file (any PyAV-readable format) or a folder of frames",
    )
    p.add_argument("--output", required=True, help="the rendered video: .mp4 or .gif")
    p.add_argument(
        "--task",
        choices=("detection", "recognition"),
        default=None,
        help="default: the task of the config (recognition configs have VIVIT/DATA sections)",
    )
    p.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score of drawn detections"
    )
    p.add_argument(
        "--fps",
        type=positive_float("--fps"),
        default=None,
        help="frame rate of a folder of frames (default 25), a number > 0",
    )
    p.add_argument(
        "--max-size",
        type=_count("--max-size"),
        default=None,
        metavar="PIXELS",
        help=f"longer side of the panels (frames are scaled down to fit; the model sees them unchanged); "
        f"default {GIF_MAX_SIZE} for a .gif, no limit for an .mp4; 0 = no limit",
    )
    p.add_argument(
        "--min-size",
        type=_count("--min-size"),
        default=MIN_SIDE,
        metavar="PIXELS",
        help=f"frames whose short side is smaller are enlarged by a whole factor (nearest neighbour) to reach "
        f"it, so that captions and labels stay legible (default {MIN_SIDE}; 0 = never)",
    )
    p.add_argument(
        "--max-frames",
        type=_count("--max-frames"),
        default=0,
        metavar="N",
        help="render only the first N frames (default 0: all)",
    )
    p.add_argument(
        "--gif-colors",
        type=_count("--gif-colors", 2, 256),
        default=GIF_COLORS,
        metavar="N",
        help=f"colours of the GIF palette (default {GIF_COLORS}, at most 256)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="a truncated or corrupt video is an error before rendering (default: render the frames that "
        "decode and warn)",
    )
    p.add_argument(
        "--class-names", default="", help="recognition: a file with one class name per line"
    )
    p.add_argument(
        "--save-frame",
        nargs=2,
        metavar=("INDEX", "PNG"),
        default=None,
        help="also save rendered frame INDEX (0-based) losslessly as a PNG",
    )
    p.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs"
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit status (2 with a one-line error for unusable input, config or output)."""
    args = get_parser().parse_args(argv)
    if len(args.opts) % 2:
        print(f"error: --opts needs KEY VALUE pairs, got {args.opts}", file=sys.stderr)
        return 2
    save = None
    if args.save_frame is not None:
        try:
            index = int(args.save_frame[0])
        except ValueError:
            index = -1
        if index < 0:
            print(
                f"error: --save-frame INDEX must be a frame index >= 0, got {args.save_frame[0]!r}",
                file=sys.stderr,
            )
            return 2
        save = (index, args.save_frame[1])
    try:
        result = render_video(
            args.config_file,
            args.input,
            args.output,
            task=args.task,
            opts=args.opts,
            confidence_threshold=args.confidence_threshold,
            fps=args.fps,
            strict=args.strict,
            class_names=args.class_names,
            save_frame=save,
            max_size=args.max_size,
            max_frames=args.max_frames,
            gif_colors=args.gif_colors,
            min_size=args.min_size,
        )
    except Exception as e:  # noqa: BLE001 - user errors become one line, bugs keep their traceback
        if isinstance(e, (DemoError, FileNotFoundError, ValueError)) or type(e).__name__ in (
            "ConfigError",
            "CheckpointError",
            "UserError",
        ):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    if result.problem:
        print(
            f"warning: {args.input}: {result.problem}; the video is truncated or corrupt, {result.path} holds "
            f"the {result.frames} frames that decoded (--strict makes this an error)",
            file=sys.stderr,
        )
    print(f"wrote {result.frames} frames to {result.path}")
    return 0
