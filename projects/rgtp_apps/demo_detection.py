"""The detector part of the embedded demo: the small trained ViTDet (``configs/demo/vid_*.yaml``,
``models/demo/vitdet_demo.pth``) evaluated on the demo VID splits through the project's own video evaluation
(``RGTPTrainer.test``: the video sampler, the RGTP meta-architecture and the VID evaluator), the per-frame schedule of
a run (frame types, reset causes, match qualities), and the calibration of ``MODEL.RGTP.CUT_THRESHOLD`` on the train
videos with cuts.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rgtp.cli import UserError, repo_root

__all__ = [
    "DET_CONFIGS",
    "DET_CUT_CONFIGS",
    "CALIBRATION_CONFIG",
    "FrameLog",
    "det_cfg",
    "evaluate_detection",
    "calibrate_cut_threshold",
    "repo_path",
    "require_checkpoint",
]

logger = logging.getLogger("rgtp.demo")

#: (row name, config file) on the demo val set; the first row is the dense reference of the speed-ups.
DET_CONFIGS: List[Tuple[str, str]] = [
    ("dense", "configs/demo/vid_base.yaml"),
    ("rgtp_keep96", "configs/demo/vid_keep96.yaml"),
    ("rgtp_keep64", "configs/demo/vid_keep64.yaml"),
    ("change_keep64", "configs/demo/vid_keep64_change.yaml"),
    ("random_keep64", "configs/demo/vid_keep64_random.yaml"),
]
#: (row name, config file) on the val videos with cuts: RGTP with periodic resets only, and with cut-aware resets.
DET_CUT_CONFIGS: List[Tuple[str, str]] = [
    ("dense", "configs/demo/vid_base.yaml"),
    ("rgtp_keep64", "configs/demo/vid_keep64.yaml"),
    ("rgtp_keep64_cuts", "configs/demo/vid_keep64_cuts.yaml"),
]
#: The config whose cut threshold is calibrated (on ``vid_train_cuts``), and the probe threshold of the
#: calibration run: below any match quality that occurs, so that the check runs on every pruned frame and never
#: fires (the schedule and the kept tokens are those of the config without the check).
CALIBRATION_CONFIG = "configs/demo/vid_keep64.yaml"
PROBE_THRESHOLD = -0.999
#: The calibration rule: the largest multiple of STEP at least MARGIN below the lowest match quality of the train
#: frames that are not cuts.
MARGIN = 0.05
STEP = 0.05


def repo_path(path: str) -> str:
    """``path`` as is when absolute, else under the repository root."""
    return path if os.path.isabs(path) else os.path.join(repo_root(), path)


def require_checkpoint(path: str) -> None:
    """Fail with a user error naming the missing demo checkpoint and how to rebuild it."""
    if not os.path.isfile(path):
        raise UserError(
            f"demo checkpoint {path!r} not found: it is committed under models/demo/; to rebuild it, run the "
            f"training commands of docs/demo.md"
        )


def det_cfg(config: str, opts: Sequence[str], out_dir: str) -> Any:
    """The frozen detectron2 config of a demo detection config file, on the CPU, without data-loader workers and
    without saving predictions."""
    from detectron2.config import get_cfg
    from rgtp_vitdet import add_rgtp_config, validate_config

    cfg = get_cfg()
    add_rgtp_config(cfg)
    cfg.merge_from_file(repo_path(config))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = (
        "cpu"  # the demo is measured on the CPU (and no "CUDA is not available" fallback)
    )
    cfg.MODEL.WEIGHTS = repo_path(cfg.MODEL.WEIGHTS)
    cfg.OUTPUT_DIR = out_dir
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.SAVE_PREDICTIONS = False
    validate_config(cfg)
    cfg.freeze()
    return cfg


def _subset(dataset: str, max_videos: int) -> str:
    """Register (once) and return a dataset name holding the first ``max_videos`` videos of ``dataset``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if max_videos <= 0:
        return dataset
    name = f"{dataset}_first{max_videos}"
    if name not in DatasetCatalog.list():

        def _load() -> List[dict]:
            dicts = DatasetCatalog.get(dataset)
            keep: List[Any] = []
            for d in dicts:
                if d["video_id"] not in keep:
                    keep.append(d["video_id"])
            keep = keep[:max_videos]
            return [d for d in dicts if d["video_id"] in keep]

        DatasetCatalog.register(name, _load)
        meta = MetadataCatalog.get(dataset).as_dict()
        meta.pop("name", None)
        MetadataCatalog.get(name).set(**meta)
    return name


class FrameLog:
    """The per-frame schedule of a detector run, recorded by a forward hook on ``RGTPVideoRCNN``: video, frame
    index, frame type, reset cause (``period``, ``cut`` or None) and the match quality of the cut check (None when
    it did not run)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.frames: List[Dict[str, Any]] = []
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple, outputs: Any) -> None:
        for x, out in zip(args[0], outputs):
            stats = out.get("rgtp", {}) if isinstance(out, dict) else {}
            state = module.stream_state(str(x["video_id"])) if module.rgtp_enabled else None
            self.frames.append(
                {
                    "video_id": str(x.get("video_id")),
                    "frame_index": x.get("frame_index"),
                    "frame_type": stats.get("frame_type"),
                    "reset_cause": stats.get("reset_cause"),
                    "match_quality": None if state is None else state.match_quality,
                }
            )

    def resets(self) -> Dict[str, int]:
        """Number of reset frames per cause."""
        out = {"period": 0, "cut": 0}
        for f in self.frames:
            if f["reset_cause"] in out:
                out[f["reset_cause"]] += 1
        return out

    def remove(self) -> None:
        """Detach the hook."""
        self._handle.remove()


def _run(cfg: Any) -> Tuple[Dict[str, Any], FrameLog, float]:
    """Build, load and evaluate one config; the evaluator's ``bbox`` results, the frame log and the wall time."""
    from rgtp_vitdet.engine import RGTPTrainer, load_weights

    require_checkpoint(cfg.MODEL.WEIGHTS)
    model = RGTPTrainer.build_model(cfg)
    load_weights(cfg, model)
    log = FrameLog(model)
    start = time.perf_counter()
    try:
        res = RGTPTrainer.test(cfg, model)["bbox"]
    finally:
        log.remove()
    return res, log, time.perf_counter() - start


def evaluate_detection(
    vid_dir: str,
    out_dir: str,
    max_videos: int,
    configs: Sequence[Tuple[str, str]] = DET_CONFIGS,
    dataset: str = "vid_val",
    on_row: Any = None,
    cut_frames: Optional[Dict[str, Sequence[int]]] = None,
) -> List[Dict[str, Any]]:
    """Evaluate every detection config on ``dataset`` (``vid_val``, or ``vid_val_cuts``: the videos with cuts) of
    the demo data under ``vid_dir``; one result row per config. ``on_row(row)`` is called after each. With
    ``cut_frames`` (video -> its cut frames, :func:`rgtp_apps.demo_data.read_cut_frames`) the rows also count the
    cuts of the evaluated videos (``cuts``) and the cut resets that fell on one (``resets_cut_on_cuts``).
    """
    os.environ["RGTP_DATASETS"] = vid_dir  # the ILSVRC2015 layouts are resolved under it
    import rgtp_vitdet  # noqa: F401  (registers vid_val, vid_val_cuts)
    from rgtp_vitdet.config import rgtp_config_from_cfg

    from rgtp.selection import FrameType, kept_count

    name = _subset(dataset, max_videos)
    rows = []
    for row_name, config in configs:
        cfg = det_cfg(config, ["DATASETS.TEST", f"('{name}',)"], os.path.join(out_dir, row_name))
        res, log, wall = _run(cfg)
        grid = cfg.MODEL.VIT.INPUT_SIZE // cfg.MODEL.VIT.PATCH_SIZE
        n = grid * grid
        r = cfg.MODEL.RGTP
        rgtp = rgtp_config_from_cfg(cfg)
        keep = kept_count(rgtp, (grid, grid), FrameType.PRUNED)
        frames = int(res["frames"])
        resets = log.resets()
        if cut_frames is not None:
            on_cut = [
                f for f in log.frames if f["frame_index"] in cut_frames.get(f["video_id"], ())
            ]
            resets["cut_on_cuts"] = sum(f["reset_cause"] == "cut" for f in on_cut)
            resets["cuts"] = len(on_cut)
        rows.append(
            {
                "config": row_name,
                "config_file": config,
                "dataset": dataset,
                "selection": r.SELECTION if r.ENABLED else "dense",
                "cut_threshold": rgtp.cut_threshold if r.ENABLED else None,
                "tokens": n,
                "kept_tokens": int(keep),
                "kept_fraction": keep / n,
                "frames": frames,
                "videos": int(res["videos"]),
                "video_ids": sorted({f["video_id"] for f in log.frames}),
                "frames_pruned": int(res.get("frames_pruned", 0)),
                "frames_full": frames - int(res.get("frames_pruned", 0)),
                "resets_period": resets["period"],
                "resets_cut": resets["cut"],
                "resets_cut_on_cuts": resets.get("cut_on_cuts"),
                "cuts": resets.get("cuts"),
                "map50": res["AP50"] / 100.0,
                "map50_devkit": res["AP50_devkit"] / 100.0,
                "gflops_paper": res["gflops_paper"],
                "gflops_executed": res["gflops_executed"],
                "ms_per_frame": 1000.0 / res["fps"],
                "wall_s": wall,
            }
        )
        logger.info("detection %s on %s: %s", row_name, name, rows[-1])
        if on_row is not None:
            on_row(rows[-1])
    return rows


# --------------------------------------------------------------------------------------------------- calibration
def _stats(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"n": 0, "min": None, "p01": None, "p05": None, "median": None, "max": None}
    v = np.asarray(values, dtype=np.float64)
    return {
        "n": int(v.size),
        "min": float(v.min()),
        "p01": float(np.percentile(v, 1)),
        "p05": float(np.percentile(v, 5)),
        "median": float(np.median(v)),
        "max": float(v.max()),
    }


def calibrate_cut_threshold(
    vid_dir: str,
    cuts_list: str,
    out_dir: str,
    config: str = CALIBRATION_CONFIG,
    dataset: str = "vid_train_cuts",
    max_videos: int = 0,
) -> Dict[str, Any]:
    """Run ``config`` on the TRAIN videos with cuts with the cut check on every pruned frame (``PROBE_THRESHOLD``:
    it never fires, so the run is the config's own schedule) and compare the match quality of the cut frames
    (listed in ``cuts_list``, ``train_cuts.txt``) with that of every other checked frame.

    The proposed threshold keeps a margin below every non-cut frame: the largest multiple of ``STEP`` at least
    ``MARGIN`` below the lowest quality of the other frames (so no false reset on the train videos); the result
    says how many cut frames it catches. When the two sets separate, the middle of their gap is reported too. Cut
    frames that fall on a periodic reset are not checked (the frame is a full frame anyway); they are counted apart.
    Every checked frame's quality is in ``frames_checked``.
    """
    from rgtp_apps.demo_data import read_cut_frames

    os.environ["RGTP_DATASETS"] = vid_dir
    import rgtp_vitdet  # noqa: F401

    name = _subset(dataset, max_videos)
    opts = ["DATASETS.TEST", f"('{name}',)", "MODEL.RGTP.CUT_THRESHOLD", str(PROBE_THRESHOLD)]
    cfg = det_cfg(config, opts, os.path.join(out_dir, "calibration"))
    _, log, wall = _run(cfg)
    cuts = read_cut_frames(cuts_list)
    videos = {f["video_id"] for f in log.frames}
    cut_q, other_q, checked, on_reset = [], [], [], 0
    for f in log.frames:
        is_cut = f["frame_index"] in cuts.get(f["video_id"], ())
        if f["match_quality"] is None:
            on_reset += is_cut
            continue
        q = float(f["match_quality"])
        (cut_q if is_cut else other_q).append(q)
        checked.append([f["video_id"], f["frame_index"], bool(is_cut), q])
    out: Dict[str, Any] = {
        "config": config,
        "dataset": dataset,
        "frames": len(log.frames),
        "videos": len(videos),
        "cuts": sum(len(v) for k, v in cuts.items() if k in videos),
        "cuts_on_full_frames": on_reset,
        "cut_frames": _stats(cut_q),
        "other_frames": _stats(other_q),
        "rule": f"largest multiple of {STEP} at least {MARGIN} below the lowest other frame",
        "threshold": None,
        "separated": bool(cut_q and other_q and max(cut_q) < min(other_q)),
        "gap_middle": None,
    }
    if other_q:
        th = round(math.floor(round((min(other_q) - MARGIN) / STEP, 6)) * STEP, 4)
        out.update(
            threshold=th,
            margin=min(other_q) - th,
            cuts_caught=sum(q < th for q in cut_q),
            cuts_missed=sum(q >= th for q in cut_q),
            false_resets=sum(q < th for q in other_q),
        )
    if out["separated"]:
        out["gap_middle"] = 0.5 * (max(cut_q) + min(other_q))
    out["wall_s"] = wall
    out["frames_checked"] = checked
    logger.info(
        "cut threshold calibration: %s", {k: v for k, v in out.items() if k != "frames_checked"}
    )
    return out
