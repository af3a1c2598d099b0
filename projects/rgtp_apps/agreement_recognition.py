"""Recognition agreement (:mod:`rgtp_apps.agreement`): the pruned ViViT against the dense one, per video and over time.

Every method is the test model of the same config and checkpoint (``rgtp_vivit.test_net.build_test_model``; dense:
``RGTP.ENABLE False``; baselines: ``RGTP.SELECTION``). Per video, two inputs go through every method:

* the config's multi-view test (``rgtp_vivit.video.make_views``: ``TEST.NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS``
  views, ensembled with ``TEST.ENSEMBLE_METHOD``), what ``tools/vivit_net.py`` measures: the per-video numbers,
  GFLOPs per video (paper convention and executed, all views) and the speed-up (the dense model's forward time
  over the method's, same run);
* consecutive clips of ``NUM_FRAMES x SAMPLING_RATE`` frames, one centre view each
  (``rgtp_vivit.visualize.clip_view``, as ``tools/demo_video.py``): the agreement over time.

The numbers, against the dense model's class distribution p (softmax of the ensembled logits; with
``sum_softmax`` the normalised sum of the views' softmaxes) and the method's q: ``top1_agreement`` (the same top
class), ``top5_overlap`` (|top-5(p) ∩ top-5(q)| / 5, k = min(5, classes)), ``kl_divergence`` KL(p || q) in nats.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rgtp.config import ConfigError

from .agreement import (
    ENABLE_KEYS,
    SELECTION_KEYS,
    AgreementError,
    FrameReader,
    count_labels,
    frame_label,
    put,
    ratio,
    skipped_reason,
)

__all__ = ["compare_distributions", "log_probs", "evaluate_recognition"]

logger = logging.getLogger("rgtp.agreement")

_VIEW_KEYS = ("NUM_FRAMES", "SAMPLING_RATE", "TEST_CROP_SIZE", "TEST_SHORT_SIDE", "MEAN", "STD")


def log_probs(scores: torch.Tensor, ensemble_method: str) -> torch.Tensor:
    """Log class probabilities (float64) of ensembled video scores ``(C,)``."""
    s = scores.double()
    if ensemble_method == "mean_logits":
        return torch.log_softmax(s, dim=-1)
    return torch.log(s / s.sum())


def compare_distributions(ref: torch.Tensor, other: torch.Tensor) -> Dict[str, Any]:
    """Top-1 agreement, top-5 overlap and KL(ref || other) of two log-probability vectors ``(C,)``."""
    k = min(5, ref.numel())
    top_ref, top_other = set(ref.topk(k).indices.tolist()), set(other.topk(k).indices.tolist())
    p = ref.exp()
    kl = float(torch.where(p > 0, p * (ref - other), torch.zeros_like(p)).sum())
    out: Dict[str, Any] = {
        "top1_agreement": float(int(ref.argmax()) == int(other.argmax())),
        "top5_overlap": len(top_ref & top_other) / k,
    }
    why = "the method gives probability 0 to a class the dense model does not"
    put(out, "kl_divergence", (max(0.0, kl), None) if np.isfinite(kl) else (None, why))
    return out


def _build_methods(
    config_file: str, specs: Sequence[Tuple[str, List[str]]], device: str, explicit_pruned: bool
) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
    from rgtp_vivit.config import load_config
    from rgtp_vivit.flops import kept_counts
    from rgtp_vivit.test_net import build_test_model
    from rgtp_vivit.visualize import class_names

    methods, skipped = [], {}
    for name, overrides in specs:
        opts = [*overrides, "NUM_GPUS", "0" if device == "cpu" else "1"]
        try:
            cfg = load_config(argparse.Namespace(cfg_files=[config_file], opts=opts))
        except ConfigError as e:
            if name in ("pruned", "dense") or SELECTION_KEYS["recognition"] not in str(e):
                raise
            skipped[name] = skipped_reason(name, "recognition", e)
            logger.warning("skipping the %s baseline: %s", name, skipped[name])
            continue
        if name == "pruned" and not cfg.RGTP.ENABLE and not explicit_pruned:
            raise AgreementError(
                f"{config_file} has {ENABLE_KEYS['recognition']} False: the pruned model would be the dense one; "
                f"pass a pruned config (e.g. configs/demo/kin_keep14.yaml)"
            )
        model = build_test_model(cfg, cfg.TEST.CHECKPOINT_FILE_PATH, torch.device(device))
        steps: List[str] = []

        def hook(_m: Any, args: tuple, kwargs: dict, _out: Any, _steps: List[str] = steps) -> None:
            state = args[1] if len(args) > 1 else kwargs.get("state")
            ftype = None if state is None or state.frame_type is None else state.frame_type.value
            _steps.append(frame_label(ftype, None if state is None else state.reset_cause))

        model.spatial.register_forward_hook(hook, with_kwargs=True)
        n = (cfg.DATA.TEST_CROP_SIZE // cfg.VIVIT.PATCH_SIZE) ** 2
        kept = kept_counts(cfg)
        methods.append(
            {
                "name": name,
                "cfg": cfg,
                "model": model,
                "steps": steps,
                "names": class_names(cfg),
                "selection": str(cfg.RGTP.SELECTION) if cfg.RGTP.ENABLE else "dense",
                "overrides": list(overrides),
                "weights": cfg.TEST.CHECKPOINT_FILE_PATH,
                "kept_tokens": int(min(kept[1:] if cfg.RGTP.ENABLE and len(kept) > 1 else kept)),
                "tokens": int(n),
            }
        )
    return methods, skipped


def _load(path: str, cfg: Any, max_frames: Optional[int]) -> Tuple[np.ndarray, Optional[str]]:
    """The frames of a video (resampled to ``DATA.TARGET_FPS`` as the test loop does) or of a frame folder."""
    if os.path.isdir(path):
        reader = FrameReader(path, max_frames)
        return reader.load(), reader.problem or None
    from rgtp_vivit.video import VideoError, decode_video

    report: List[str] = []
    try:
        video, _ = decode_video(path, target_fps=cfg.DATA.TARGET_FPS, report=report)
    except VideoError as e:
        raise AgreementError(str(e)) from None
    return (video[:max_frames] if max_frames else video), ("; ".join(report) or None)


def _forward(m: Dict[str, Any], x: torch.Tensor) -> Tuple[torch.Tensor, dict]:
    """Log-probabilities of views ``x`` (ensembled) through one method, with the cost and the tubelet steps'
    labels (the views of a batch advance in lock-step)."""
    from rgtp_vivit.meters import ensemble_views

    from rgtp.counting import FlopCounter

    m["steps"].clear()
    dev = next(m["model"].parameters()).device
    x = x.to(dev)
    start = time.perf_counter()
    with torch.inference_mode(), FlopCounter() as counter:
        logits = m["model"](x)["logits"]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    ms = 1000.0 * (time.perf_counter() - start)
    scores = ensemble_views(logits.float().cpu()[None], m["cfg"].TEST.ENSEMBLE_METHOD)[0]
    cost = {
        "gflops_paper": counter.paper.total / 1e9,
        "gflops_executed": counter.executed.total / 1e9,
        "ms": ms,
        "steps": list(m["steps"]),
    }
    return log_probs(scores, m["cfg"].TEST.ENSEMBLE_METHOD), cost


def _views(cfg: Any, video: np.ndarray, cache: dict) -> torch.Tensor:
    from rgtp_vivit.video import make_views

    d, t = cfg.DATA, cfg.TEST
    key = tuple(str(d[k]) for k in _VIEW_KEYS) + (t.NUM_ENSEMBLE_VIEWS, t.NUM_SPATIAL_CROPS)
    if key not in cache:
        cache[key] = make_views(
            video,
            d.NUM_FRAMES,
            d.SAMPLING_RATE,
            t.NUM_ENSEMBLE_VIEWS,
            t.NUM_SPATIAL_CROPS,
            d.TEST_CROP_SIZE,
            d.TEST_SHORT_SIDE,
            d.MEAN,
            d.STD,
        )
    return cache[key]


def _video(video: np.ndarray, methods: List[Dict[str, Any]], order: int) -> Dict[str, Any]:
    """Multi-view and per-clip results of every method on one video."""
    from rgtp_vivit.visualize import clip_view, step_of_frame

    k = order % len(methods)
    cache: dict = {}
    res: Dict[str, Any] = {m["name"]: {} for m in methods}
    for m in methods[k:] + methods[:k]:
        res[m["name"]]["video"] = _forward(m, _views(m["cfg"], video, cache))
    cfg0 = methods[0]["cfg"]
    span = cfg0.DATA.NUM_FRAMES * cfg0.DATA.SAMPLING_RATE
    clips = [(s, min(s + span, len(video))) for s in range(0, len(video), span)]
    for m in methods:
        res[m["name"]]["clips"], res[m["name"]]["frame_type"] = [], []
        for s, e in clips:
            lp, cost = _forward(m, clip_view(video[s:e], m["cfg"]))
            res[m["name"]]["clips"].append(lp)
            steps = cost["steps"]
            res[m["name"]]["frame_type"] += [
                steps[step_of_frame(o, m["cfg"], len(steps))] for o in range(e - s)
            ]
    return {"methods": res, "clips": clips}


_KEYS = ("top1_agreement", "top5_overlap", "kl_divergence")


def _cost(cost: List[dict]) -> Dict[str, Any]:
    """GFLOPs and time per video (the multi-view test), and the labels of its tubelet steps."""
    out: Dict[str, Any] = {"videos": len(cost)}
    for key in ("gflops_paper", "gflops_executed"):
        out[key] = float(np.mean([c[key] for c in cost]))
    out["ms_per_video"] = float(np.mean([c["ms"] for c in cost]))
    out["frame_types"] = count_labels([s for c in cost for s in c["steps"]])
    return out


def _summary(
    videos: List[dict], clips: List[dict], ref_cost: List[dict], cost: List[dict]
) -> Dict[str, Any]:
    """Means over videos and over clips of the comparisons, with the cost per video and the speed-up."""
    out = _cost(cost)
    put(
        out, "speedup", ratio(sum(c["ms"] for c in ref_cost), sum(c["ms"] for c in cost), "no time")
    )
    out["clips"] = len(clips)
    for prefix, cmps in (("", videos), ("clip_", clips)):
        for key in _KEYS:
            vals = [c[key] for c in cmps]
            ok = bool(vals) and all(v is not None for v in vals)
            why = "undefined on a video or clip" if vals else "nothing compared"
            put(out, prefix + key, (float(np.mean(vals)), None) if ok else (None, why))
    return out


def evaluate_recognition(
    videos: List[str],
    names: List[str],
    config_file: str,
    specs: Sequence[Tuple[str, List[str]]],
    max_frames: Optional[int],
    device: str,
    progress: bool,
    explicit_pruned: bool,
) -> Dict[str, Any]:
    """The recognition report (see the module docstring); :func:`rgtp_apps.agreement.run_agreement` calls it."""
    from tqdm import tqdm

    methods, skipped = _build_methods(config_file, specs, device, explicit_pruned)
    entries, bad = [], []
    acc: Dict[str, Dict[str, list]] = {m["name"]: {"v": [], "c": [], "cost": []} for m in methods}
    for path, name in tqdm(
        list(zip(videos, names)), desc="agreement", unit="video", disable=not progress
    ):
        try:
            video, problem = _load(path, methods[0]["cfg"], max_frames)
        except AgreementError as e:
            bad.append({"video": path, "error": str(e)})
            continue
        if not entries:  # one untimed pass of every model before the first timed one
            _video(video[: methods[0]["cfg"].DATA.NUM_FRAMES], methods, 0)
        run = _video(video, methods, len(entries))
        res = run["methods"]
        dense_lp, dense_cost = res["dense"]["video"]
        entry: Dict[str, Any] = {"video": path, "name": name, "frames": int(len(video))}
        entry.update(size=list(video.shape[1:3]), problem=problem, methods={})
        timeline: Dict[str, Any] = {"clips": [list(c) for c in run["clips"]], "frame_type": {}}
        timeline.update({key: {} for key in _KEYS})
        for m in methods:
            lp, cost = res[m["name"]]["video"]
            top = m["names"][int(lp.argmax())]
            timeline["frame_type"][m["name"]] = res[m["name"]]["frame_type"]
            acc[m["name"]]["cost"].append(cost)
            if m["name"] == "dense":
                entry["methods"]["dense"] = _cost([cost])
                entry["methods"]["dense"].update(top1=top, clips=len(run["clips"]))
                continue
            v = compare_distributions(dense_lp, lp)
            pairs = zip(res["dense"]["clips"], res[m["name"]]["clips"])
            c = [compare_distributions(a, b) for a, b in pairs]
            acc[m["name"]]["v"].append(v)
            acc[m["name"]]["c"] += c
            entry["methods"][m["name"]] = _summary([v], c, [dense_cost], [cost])
            entry["methods"][m["name"]]["top1"] = top
            for key in _KEYS:
                timeline[key][m["name"]] = [x[key] for x in c]
        entry["timeline"] = timeline
        entries.append(entry)
    overall: Dict[str, Any] = {"videos": len(entries), "frames": sum(e["frames"] for e in entries)}
    if entries:
        dense_cost = acc["dense"]["cost"]
        overall["methods"] = {"dense": _cost(dense_cost)}
        for m in methods[1:]:
            a = acc[m["name"]]
            overall["methods"][m["name"]] = _summary(a["v"], a["c"], dense_cost, a["cost"])
    return {
        "tool": "rgtp_apps.agreement",
        "config_file": config_file,
        "reference": "dense",
        "target_fps": float(methods[0]["cfg"].DATA.TARGET_FPS),
        "methods": {
            m["name"]: {
                k: m[k] for k in ("selection", "overrides", "weights", "kept_tokens", "tokens")
            }
            for m in methods
        },
        "skipped_methods": skipped,
        "videos": entries,
        "skipped_videos": bad,
        "overall": overall,
    }
