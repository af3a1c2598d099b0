#!/usr/bin/env python
"""The embedded demo (``make demo``): dense vs RGTP vs a random-selection baseline, on both tasks, on CPU.

1. prepares the generated demo data when needed (``datasets/prepare_demo.py``);
2. evaluates the small trained detector (``configs/demo/vid_*.yaml``, ``models/demo/vitdet_demo.pth``) on the demo
   VID val set through the project's own video evaluation (``RGTPTrainer.test``: the video sampler, the RGTP
   meta-architecture and the VID evaluator), and the small ViViT (``configs/demo/kin_*.yaml``) through the ViViT test
   loop (``rgtp_vivit.test_net.test``);
3. prints one table per task (config, kept tokens, accuracy, GFLOPs under the paper's convention and as executed,
   time per frame / clip, speed-up over dense measured in this run), writes ``OUTPUT/demo_results.json`` and the
   trade-off plot ``OUTPUT/tradeoff.png``.

Every number comes from the evaluation; nothing is tuned on, or written for, the val set.

    python tools/demo.py                          # the full demo (a few minutes on 2 CPU cores)
    python tools/demo.py --small --root /tmp/d    # the cut-down data of the tests (seconds)
    python tools/demo.py --max-videos 2           # only the first 2 val videos of each task
    python tools/demo.py --pack SRC DST           # store a trained checkpoint in fp16 (how models/demo/ was made)

Times are measured around the model's forward pass (detection: the per-frame time the meta-architecture records;
recognition: a forward hook on the test model), so that JPEG and video decoding do not dilute the speed-up; the
whole evaluation's wall time is reported beside them.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

import torch

logger = logging.getLogger("rgtp.demo")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (row name, config file) per task; the first row of each task is the dense reference of the speed-ups.
DET_CONFIGS = [
    ("dense", "configs/demo/vid_base.yaml"),
    ("rgtp_keep96", "configs/demo/vid_keep96.yaml"),
    ("rgtp_keep64", "configs/demo/vid_keep64.yaml"),
    ("random_keep64", "configs/demo/vid_keep64_random.yaml"),
]
REC_CONFIGS = [
    ("dense", "configs/demo/kin_base.yaml", None),
    # the pruned spatial model with the dense model's temporal weights: what the fine-tune buys
    ("rgtp_keep14_no_ft", "configs/demo/kin_keep14.yaml", "models/demo/vivit_demo.pyth"),
    ("rgtp_keep14", "configs/demo/kin_keep14.yaml", None),
    ("random_keep14", "configs/demo/kin_keep14_random.yaml", None),
]


# --------------------------------------------------------------------------------------------------- utilities
def atomic_write_text(text: str, path: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@functools.lru_cache(maxsize=None)
def _load_prepare_demo() -> Any:
    """``datasets/prepare_demo.py`` as a module (``datasets/`` is not a package), loaded once."""
    path = os.path.join(REPO, "datasets", "prepare_demo.py")
    spec = importlib.util.spec_from_file_location("rgtp_prepare_demo", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _repo_path(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(REPO, path)


def _require_checkpoint(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"demo checkpoint {path!r} not found: it is committed under models/demo/; to rebuild it, run the "
            f"training commands of docs/demo.md"
        )


# --------------------------------------------------------------------------------------------------- packing
def pack_checkpoint(src: str, dst: str) -> str:
    """Store the model weights of a training checkpoint (detectron2 ``model`` or PySlowFast ``model_state``) in
    float16, without the optimizer state, atomically; returns the sha256 of ``dst``. Loading casts them back to the
    model's float32."""
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
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = f"{dst}.tmp.{os.getpid()}"
    torch.save(out, tmp)
    os.replace(tmp, dst)
    digest = _load_prepare_demo().sha256_file(dst)
    logger.info(
        "packed %s -> %s (%.2f MB, sha256 %s)", src, dst, os.path.getsize(dst) / 1e6, digest
    )
    return digest


# --------------------------------------------------------------------------------------------------- detection
def _det_cfg(config: str, opts: Sequence[str], out_dir: str) -> Any:
    from detectron2.config import get_cfg
    from rgtp_vitdet import add_rgtp_config, validate_config

    cfg = get_cfg()
    add_rgtp_config(cfg)
    cfg.merge_from_file(_repo_path(config))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = _repo_path(cfg.MODEL.WEIGHTS)
    cfg.OUTPUT_DIR = out_dir
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.SAVE_PREDICTIONS = False
    validate_config(cfg)
    cfg.freeze()
    return cfg


def _det_subset(max_videos: int) -> str:
    """Register (once) and return a dataset name holding the first ``max_videos`` videos of ``vid_val``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if max_videos <= 0:
        return "vid_val"
    name = f"vid_val_first{max_videos}"
    if name not in DatasetCatalog.list():

        def _load() -> List[dict]:
            dicts = DatasetCatalog.get("vid_val")
            keep: List[Any] = []
            for d in dicts:
                if d["video_id"] not in keep:
                    keep.append(d["video_id"])
            keep = keep[:max_videos]
            return [d for d in dicts if d["video_id"] in keep]

        DatasetCatalog.register(name, _load)
        meta = MetadataCatalog.get("vid_val").as_dict()
        meta.pop("name", None)
        MetadataCatalog.get(name).set(**meta)
    return name


def evaluate_detection(
    vid_dir: str, out_dir: str, max_videos: int, configs: Sequence = DET_CONFIGS
) -> List[Dict[str, Any]]:
    """Evaluate every detection config on the demo VID val set; one result row per config."""
    os.environ["RGTP_DATASETS"] = vid_dir  # the ILSVRC2015 layout is resolved under it
    import rgtp_vitdet  # noqa: F401  (registers vid_val)
    from rgtp_vitdet.engine import RGTPTrainer, load_weights

    dataset = _det_subset(max_videos)
    rows = []
    for name, config in configs:
        cfg = _det_cfg(config, ["DATASETS.TEST", f"('{dataset}',)"], os.path.join(out_dir, name))
        _require_checkpoint(cfg.MODEL.WEIGHTS)
        model = RGTPTrainer.build_model(cfg)
        load_weights(cfg, model)
        start = time.perf_counter()
        res = RGTPTrainer.test(cfg, model)["bbox"]
        wall = time.perf_counter() - start
        grid = cfg.MODEL.VIT.INPUT_SIZE // cfg.MODEL.VIT.PATCH_SIZE
        n = grid * grid
        r = cfg.MODEL.RGTP
        if r.ENABLED:
            keep = r.KEEP_TOKENS if r.KEEP_TOKENS > 0 else round(r.KEEP_RATIO * n)
        else:
            keep = n
        frames = int(res["frames"])
        rows.append(
            {
                "config": name,
                "config_file": config,
                "selection": r.SELECTION if r.ENABLED else "dense",
                "tokens": n,
                "kept_tokens": int(keep),
                "kept_fraction": keep / n,
                "frames": frames,
                "frames_pruned": int(res.get("frames_pruned", 0)),
                "frames_full": frames - int(res.get("frames_pruned", 0)),
                "map50": res["AP50"] / 100.0,
                "map50_devkit": res["AP50_devkit"] / 100.0,
                "gflops_paper": res["gflops_paper"],
                "gflops_executed": res["gflops_executed"],
                "ms_per_frame": 1000.0 / res["fps"],
                "wall_s": wall,
            }
        )
        logger.info("detection %s: %s", name, rows[-1])
    _relative(rows, "ms_per_frame")
    return rows


# --------------------------------------------------------------------------------------------------- recognition
class _ForwardTimer:
    """Accumulates the wall time of a module's forward passes (pre/post hooks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._t0 = 0.0

    def attach(self, module: torch.nn.Module) -> torch.nn.Module:
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)
        return module

    def _pre(self, *_: Any) -> None:
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1


def evaluate_recognition(
    kinetics_dir: str, out_dir: str, max_videos: int, configs: Sequence = REC_CONFIGS
) -> List[Dict[str, Any]]:
    """Evaluate every recognition config on the demo Kinetics val set through the ViViT test loop."""
    from rgtp_vivit import test_net
    from rgtp_vivit.config import assert_and_infer_cfg, get_cfg
    from rgtp_vivit.flops import kept_counts

    rows = []
    original_build = test_net.build_test_model
    for name, config, weights in configs:
        cfg = get_cfg()
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", SyntaxWarning
            )  # yacs literal_eval()s values like "1in2"
            cfg.merge_from_file(_repo_path(config))
        cfg.DATA.PATH_TO_DATA_DIR = kinetics_dir
        cfg.OUTPUT_DIR = os.path.join(out_dir, name)
        cfg.TEST.MAX_VIDEOS = max_videos
        cfg.NUM_GPUS = 0
        cfg.TEST.CHECKPOINT_FILE_PATH = _repo_path(weights or cfg.TEST.CHECKPOINT_FILE_PATH)
        assert_and_infer_cfg(cfg)
        _require_checkpoint(cfg.TEST.CHECKPOINT_FILE_PATH)
        timer = _ForwardTimer()

        def _timed(*a: Any, _t: _ForwardTimer = timer, **k: Any) -> torch.nn.Module:
            return _t.attach(original_build(*a, **k))

        test_net.build_test_model = _timed
        try:
            start = time.perf_counter()
            res = test_net.test(cfg)
            wall = time.perf_counter() - start
        finally:
            test_net.build_test_model = original_build
        if res is None:
            raise RuntimeError(f"{config}: the test returned no results")
        kept = kept_counts(cfg)
        n = (cfg.DATA.TEST_CROP_SIZE // cfg.VIVIT.PATCH_SIZE) ** 2
        pruned = kept[1:] if cfg.RGTP.ENABLE and len(kept) > 1 else kept
        k = min(pruned)
        videos = int(res["num_videos"])
        rows.append(
            {
                "config": name,
                "config_file": config,
                "weights": os.path.relpath(cfg.TEST.CHECKPOINT_FILE_PATH, REPO),
                "selection": cfg.RGTP.SELECTION if cfg.RGTP.ENABLE else "dense",
                "tokens": n,
                "kept_tokens": int(k),
                "kept_fraction": k / n,
                "kept_per_tubelet": [int(x) for x in kept],
                "videos": videos,
                "views_per_video": cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS,
                "top1": res["top1"] / 100.0,
                "gflops_paper": res["tflops_per_video_paper"] * 1e3,
                "gflops_executed": res["tflops_per_video_executed"] * 1e3,
                "ms_per_clip": 1000.0 * timer.seconds / max(1, videos),
                "wall_s": wall,
            }
        )
        logger.info("recognition %s: %s", name, rows[-1])
    _relative(rows, "ms_per_clip")
    return rows


# --------------------------------------------------------------------------------------------------- reporting
def _relative(rows: List[Dict[str, Any]], time_key: str) -> None:
    """Speed-up and GFLOPs ratio of every row against the first (dense) row of the same run."""
    ref = rows[0]
    for r in rows:
        r["speedup"] = ref[time_key] / r[time_key] if r[time_key] > 0 else float("nan")
        r["gflops_ratio"] = r["gflops_paper"] / ref["gflops_paper"]
        acc = "map50" if "map50" in r else "top1"
        r[f"{acc}_drop_points"] = 100.0 * (ref[acc] - r[acc])


def format_table(rows: List[Dict[str, Any]], task: str) -> str:
    """A fixed-width text table of one task's rows."""
    if task == "detection":
        head = [
            "config",
            "kept/N",
            "mAP50",
            "GFLOPs/frame paper",
            "executed",
            "ratio",
            "ms/frame",
            "speed-up",
        ]
        body = [
            [
                r["config"],
                f"{r['kept_tokens']}/{r['tokens']}",
                f"{r['map50']:.3f}",
                f"{r['gflops_paper']:.4f}",
                f"{r['gflops_executed']:.4f}",
                f"{r['gflops_ratio']:.2f}",
                f"{r['ms_per_frame']:.1f}",
                f"{r['speedup']:.2f}x",
            ]
            for r in rows
        ]
    else:
        head = [
            "config",
            "kept/N",
            "top-1",
            "GFLOPs/video paper",
            "executed",
            "ratio",
            "ms/clip",
            "speed-up",
        ]
        body = [
            [
                r["config"],
                f"{r['kept_tokens']}/{r['tokens']}",
                f"{r['top1']:.3f}",
                f"{r['gflops_paper']:.4f}",
                f"{r['gflops_executed']:.4f}",
                f"{r['gflops_ratio']:.2f}",
                f"{r['ms_per_clip']:.1f}",
                f"{r['speedup']:.2f}x",
            ]
            for r in rows
        ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def plot_tradeoff(results: Dict[str, Any], path: str) -> None:
    """Accuracy against backbone GFLOPs (fraction of dense), one panel per task, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [(t, k) for t, k in (("detection", "map50"), ("recognition", "top1")) if results.get(t)]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4.2))
    axes = [axes] if not hasattr(axes, "__len__") else list(axes)
    styles = {"dense": ("k", "s"), "rollout": ("tab:blue", "o"), "random": ("tab:red", "x")}
    for ax, (task, key) in zip(axes, tasks):
        for r in results[task]:
            color, marker = styles.get(r["selection"], ("tab:gray", "d"))
            ax.scatter(r["gflops_ratio"], r[key], c=color, marker=marker, s=60)
            ax.annotate(
                r["config"],
                (r["gflops_ratio"], r[key]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set_xlabel("GFLOPs (paper convention), fraction of dense")
        ax.set_ylabel("mAP50" if key == "map50" else "top-1")
        ax.set_title(f"demo {task}")
        ax.set_xlim(0, 1.1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- main
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
    return p.parse_args(argv)


def run_demo(args: argparse.Namespace) -> Dict[str, Any]:
    """Prepare the data, evaluate both tasks, print the tables, write the JSON and the plot; return the results."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ("detection", "recognition")]
    if bad:
        raise ValueError(f"--tasks: unknown task(s) {bad}; allowed detection, recognition")
    t0 = time.perf_counter()
    paths = _load_prepare_demo().prepare_demo(root=args.root, small=args.small)
    out_dir = os.path.abspath(args.out)
    results: Dict[str, Any] = {
        "small_data": bool(args.small),
        "max_videos": int(args.max_videos),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    checkpoints = {}
    for p in (
        "models/demo/vitdet_demo.pth",
        "models/demo/vivit_demo.pyth",
        "models/demo/vivit_demo_keep14.pyth",
    ):
        if os.path.isfile(_repo_path(p)):
            checkpoints[p] = _load_prepare_demo().sha256_file(_repo_path(p))
    results["checkpoints_sha256"] = checkpoints
    if "detection" in tasks:
        vid_dir = os.path.abspath(os.path.dirname(paths["vid_root"]))
        results["detection"] = evaluate_detection(
            vid_dir, os.path.join(out_dir, "detection"), args.max_videos
        )
    if "recognition" in tasks:
        results["recognition"] = evaluate_recognition(
            os.path.abspath(paths["kinetics_root"]),
            os.path.join(out_dir, "recognition"),
            args.max_videos,
        )
    results["total_seconds"] = time.perf_counter() - t0
    json_path = os.path.join(out_dir, "demo_results.json")
    atomic_write_text(json.dumps(results, indent=2), json_path)
    plot_tradeoff(results, os.path.join(out_dir, "tradeoff.png"))
    lines = []
    if results.get("detection"):
        n = results["detection"][0]["frames"]
        lines += [f"\nDetection (demo VID val, {n} frames; backbone GFLOPs per frame):"]
        lines += [format_table(results["detection"], "detection")]
    if results.get("recognition"):
        r0 = results["recognition"][0]
        lines += [
            f"\nRecognition (demo Kinetics val, {r0['videos']} videos x {r0['views_per_video']} views; "
            f"GFLOPs per video):"
        ]
        lines += [format_table(results["recognition"], "recognition")]
    lines += [f"\nResults: {json_path}, plot: {os.path.join(out_dir, 'tradeoff.png')}"]
    lines += [f"Total time: {results['total_seconds']:.0f} s"]
    sys.stdout.write("\n".join(lines) + "\n")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point."""
    from rgtp_vivit.logging_utils import setup_logging

    setup_logging()  # one tagged root handler; the recogniser's own setup replaces it instead of adding a second
    args = parse_args(argv)
    if args.pack:
        print(pack_checkpoint(*args.pack))
        return 0
    run_demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
