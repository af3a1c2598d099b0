"""The embedded demo (``make demo``, ``tools/demo.py``): dense vs RGTP vs the change-based (Eventful-style) and
random-selection baselines, on both tasks, on CPU, and RGTP with and without cut-aware resets on videos with cuts.

1. prepares the generated demo data when needed (:func:`rgtp_apps.demo_data.prepare_demo`);
2. evaluates the small trained detector on the demo VID val set and on the val videos with cuts
   (:mod:`rgtp_apps.demo_detection`), and the small ViViT on the demo Kinetics val set
   (:mod:`rgtp_apps.demo_recognition`);
3. prints one table per task (config, kept tokens, accuracy, GFLOPs under the paper's convention and as executed,
   resets per cause on the videos with cuts, time per frame / clip, speed-up over dense measured in this run) and
   where the files went; writes ``OUT/demo_results.json``, the trade-off plot ``OUT/tradeoff.png`` and everything
   else the run logs (configs, models, per-class APs, warnings) to ``OUT/demo.log``.

Every number comes from the evaluation; nothing is tuned on, or written for, the val sets (the cut threshold of
``configs/demo/vid_keep64_cuts.yaml`` was calibrated on the train videos with cuts: ``--calibrate-cuts``).

Times are measured around the model's forward pass (detection: the per-frame time the meta-architecture records;
recognition: a forward hook on the test model), so that JPEG and video decoding do not dilute the speed-up; the
whole evaluation's wall time is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO

import torch

from rgtp.fileio import atomic_torch_save

from .demo_detection import (
    DET_CONFIGS,
    DET_CUT_CONFIGS,
    calibrate_cut_threshold,
    evaluate_detection,
    repo_path,
)
from .demo_recognition import REC_CONFIGS, evaluate_recognition
from .demo_report import atomic_write_text, format_table, quiet
from .tradeoff import plot_demo

__all__ = [
    "DET_CONFIGS",
    "DET_CUT_CONFIGS",
    "REC_CONFIGS",
    "CHECKPOINTS",
    "format_table",
    "pack_checkpoint",
    "parse_args",
    "run_demo",
    "run_calibration",
    "main",
]

logger = logging.getLogger("rgtp.demo")

#: The committed demo checkpoints (their sha256 goes into the JSON).
CHECKPOINTS = (
    "models/demo/vitdet_demo.pth",
    "models/demo/vivit_demo.pyth",
    "models/demo/vivit_demo_keep14.pyth",
)
TASKS = ("detection", "recognition")


def pack_checkpoint(src: str, dst: str) -> str:
    """Store the model weights of a training checkpoint (detectron2 ``model`` or PySlowFast ``model_state``) in
    float16, without the optimizer state, atomically; returns the sha256 of ``dst``. Loading casts them back to the
    model's float32."""
    from .demo_data import sha256_file

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    key = "model_state" if "model_state" in ckpt else "model"
    state = {
        k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in ckpt[key].items()
    }
    out: Dict[str, Any] = {"source": os.path.basename(src)}
    out[key] = state
    for extra in ("epoch", "iteration"):
        if extra in ckpt:
            out[extra] = ckpt[extra]
    atomic_torch_save(out, dst)
    digest = sha256_file(dst)
    logger.info(
        "packed %s -> %s (%.2f MB, sha256 %s)", src, dst, os.path.getsize(dst) / 1e6, digest
    )
    return digest


def _relative(rows: List[Dict[str, Any]], time_key: str) -> None:
    """Speed-up and GFLOPs ratio of every row against the first (dense) row of the same run."""
    ref = rows[0]
    for r in rows:
        r["speedup"] = ref[time_key] / r[time_key] if r[time_key] > 0 else float("nan")
        r["gflops_ratio"] = r["gflops_paper"] / ref["gflops_paper"]
        acc = "map50" if "map50" in r else "top1"
        r[f"{acc}_drop_points"] = 100.0 * (ref[acc] - r[acc])


class _Progress:
    """One screen line per stage: its name, then each row's name as it finishes, then the time."""

    def __init__(self, screen: TextIO) -> None:
        self.screen = screen
        self._t0 = 0.0

    def start(self, what: str) -> None:
        self._t0 = time.perf_counter()
        self.screen.write(f"{what}:")
        self.screen.flush()

    def row(self, row: Dict[str, Any]) -> None:
        self.screen.write(f" {row['config']}")
        self.screen.flush()

    def done(self) -> None:
        self.screen.write(f" ({time.perf_counter() - self._t0:.0f} s)\n")
        self.screen.flush()


def _tasks(text: str) -> List[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"--tasks: unknown task(s) {bad}; allowed detection, recognition")
    return tasks


def _summary(results: Dict[str, Any], out_dir: str, log_path: str) -> List[str]:
    lines = []
    if results.get("detection"):
        r0 = results["detection"][0]
        lines += [
            f"\nDetection (demo VID val, {r0['videos']} videos, {r0['frames']} frames; backbone GFLOPs per "
            f"frame):",
            format_table(results["detection"], "detection"),
        ]
    if results.get("detection_cuts"):
        rows = results["detection_cuts"]
        th = next((r["cut_threshold"] for r in rows if r["cut_threshold"] is not None), None)
        lines += [
            f"\nDetection on the val videos with cuts ({rows[0]['videos']} videos, {rows[0]['frames']} frames, "
            f"{results['cuts_in_val']} cuts; cut threshold {th}, calibrated on train):",
            format_table(rows, "detection_cuts"),
        ]
    if results.get("recognition"):
        r0 = results["recognition"][0]
        lines += [
            f"\nRecognition (demo Kinetics val, {r0['videos']} videos x {r0['views_per_video']} views; "
            f"GFLOPs per video):",
            format_table(results["recognition"], "recognition"),
        ]
    lines += [
        f"\nResults: {os.path.join(out_dir, 'demo_results.json')}",
        f"Plot:    {', '.join(results.get('plots') or [os.path.join(out_dir, 'tradeoff.png')])}",
        f"Log:     {log_path}",
        f"Total time: {results['total_seconds']:.0f} s",
    ]
    return lines


def run_demo(args: argparse.Namespace) -> Dict[str, Any]:
    """Prepare the data, evaluate both tasks, print the tables, write the JSON, the plot and the log; return the
    results."""
    from .demo_data import prepare_demo, read_cut_frames, sha256_file

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tasks = _tasks(args.tasks)
    t0 = time.perf_counter()
    out_dir = os.path.abspath(args.out)
    log_path = os.path.join(out_dir, "demo.log")
    results: Dict[str, Any] = {
        "small_data": bool(args.small),
        "max_videos": int(args.max_videos),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    with quiet(log_path) as screen:
        progress = _Progress(screen)
        progress.start("Demo data (generated when missing)")
        paths = prepare_demo(root=args.root, small=args.small, progress=False)
        screen.write(f" {os.path.dirname(paths['vid_dir'])}")
        progress.done()
        results["checkpoints_sha256"] = {
            p: sha256_file(repo_path(p)) for p in CHECKPOINTS if os.path.isfile(repo_path(p))
        }
        if "detection" in tasks:
            vid_dir = os.path.abspath(paths["vid_dir"])
            det_out = os.path.join(out_dir, "detection")
            progress.start("Detection, val")
            results["detection"] = evaluate_detection(
                vid_dir, det_out, args.max_videos, DET_CONFIGS, "vid_val", progress.row
            )
            _relative(results["detection"], "ms_per_frame")
            progress.done()
            progress.start("Detection, val videos with cuts")
            results["detection_cuts"] = evaluate_detection(
                vid_dir,
                os.path.join(det_out, "cuts"),
                args.max_videos,
                DET_CUT_CONFIGS,
                "vid_val_cuts",
                progress.row,
                cut_frames=read_cut_frames(paths["vid_cuts_val_cuts"]),
            )
            _relative(results["detection_cuts"], "ms_per_frame")
            results["cuts_in_val"] = results["detection_cuts"][0]["cuts"]
            progress.done()
        if "recognition" in tasks:
            progress.start("Recognition, val")
            results["recognition"] = evaluate_recognition(
                os.path.abspath(paths["kinetics_root"]),
                os.path.join(out_dir, "recognition"),
                args.max_videos,
                REC_CONFIGS,
                progress.row,
            )
            _relative(results["recognition"], "ms_per_clip")
            progress.done()
        results["total_seconds"] = time.perf_counter() - t0
        results["plots"] = plot_demo(results, os.path.join(out_dir, "tradeoff.png"))
        atomic_write_text(json.dumps(results, indent=2), os.path.join(out_dir, "demo_results.json"))
        text = "\n".join(_summary(results, out_dir, log_path)) + "\n"
        logger.info("summary:\n%s", text)
        screen.write(text)
        screen.flush()
    return results


def run_calibration(args: argparse.Namespace) -> Dict[str, Any]:
    """Calibrate the cut threshold on the train videos with cuts; print the numbers, write
    ``OUT/cut_calibration.json``."""
    from .demo_data import prepare_demo

    out_dir = os.path.abspath(args.out)
    log_path = os.path.join(out_dir, "calibration.log")
    with quiet(log_path) as screen:
        paths = prepare_demo(root=args.root, small=args.small, progress=False)
        res = calibrate_cut_threshold(
            os.path.abspath(paths["vid_dir"]),
            paths["vid_cuts_train_cuts"],
            out_dir,
            max_videos=args.max_videos,
        )
        path = os.path.join(out_dir, "cut_calibration.json")
        atomic_write_text(json.dumps(res, indent=2), path)
        c, o = res["cut_frames"], res["other_frames"]

        def fmt(v: Optional[float]) -> str:
            return "-" if v is None else f"{v:.3f}"

        lines = [
            f"Cut threshold calibration on {res['dataset']} ({res['videos']} videos, {res['frames']} frames, "
            f"{res['cuts']} cuts, {res['cuts_on_full_frames']} of them on full frames; {res['config']}):",
            f"  match quality, cut frames:   n {c['n']}, min {fmt(c['min'])}, median {fmt(c['median'])}, "
            f"max {fmt(c['max'])}",
            f"  match quality, other frames: n {o['n']}, min {fmt(o['min'])}, 1% {fmt(o['p01'])}, "
            f"5% {fmt(o['p05'])}, median {fmt(o['median'])}, max {fmt(o['max'])}",
        ]
        if res["threshold"] is not None:
            lines.append(
                f"  threshold {res['threshold']:.2f} ({res['rule']}; margin {res['margin']:.3f}): catches "
                f"{res['cuts_caught']} of {c['n']} checked cut frames, {res['false_resets']} false resets"
            )
        if res["gap_middle"] is not None:
            lines.append(f"  the two separate; middle of the gap {res['gap_middle']:.3f}")
        lines += [f"Results: {path}", f"Log:     {log_path}"]
        screen.write("\n".join(lines) + "\n")
    return res


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of the demo."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="data root ($RGTP_DATASETS, else ./datasets)")
    p.add_argument("--out", default=os.path.join("output", "demo"), help="output folder")
    p.add_argument("--small", action="store_true", help="the cut-down data of the tests")
    p.add_argument("--max-videos", type=int, default=0, help="evaluate only the first N val videos")
    p.add_argument(
        "--tasks", default="detection,recognition", help="comma-separated: detection,recognition"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument(
        "--pack", nargs=2, metavar=("SRC", "DST"), help="pack a checkpoint in fp16 and exit"
    )
    p.add_argument(
        "--calibrate-cuts",
        action="store_true",
        help="calibrate the cut threshold on the train videos with cuts and exit",
    )
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: the demo, ``--calibrate-cuts`` or ``--pack``."""
    args = parse_args(argv)
    if args.pack:
        print(pack_checkpoint(*args.pack))
        return 0
    if args.calibrate_cuts:
        run_calibration(args)
        return 0
    run_demo(args)
    return 0


if __name__ == "__main__":  # pragma: no cover - tools/demo.py is the entry point
    sys.exit(main())
