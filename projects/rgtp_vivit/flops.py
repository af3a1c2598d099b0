"""FLOPs per video by executing the full ViViT on the ``meta`` device (docs/method.md §5.1, §5.3).

One video = NUM_ENSEMBLE_VIEWS × NUM_SPATIAL_CROPS views (12) batched, through the tubelet embedding (not counted),
the spatial model with RGTP, the temporal model and the classifier. Counting uses shapes only, so ViViT-B counts in
about a second. The ``paper`` tally is the paper's convention (verb classifier only); ``executed`` also includes the
EPIC noun head when the config has one.
"""

from __future__ import annotations

import os
from typing import List, Tuple

import torch
from fvcore.common.config import CfgNode

from rgtp.counting import FlopCounter
from rgtp.selection import frame_type, kept_count

from .build import build_model
from .config import load_config, parse_args, to_rgtp_config


def _meta_run(cfg: CfgNode) -> tuple:
    views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    s = cfg.DATA.TEST_CROP_SIZE
    with torch.device("meta"):
        model = build_model(cfg).eval()
        x = torch.empty(views, 3, cfg.DATA.NUM_FRAMES, s, s)
    with torch.no_grad(), FlopCounter() as counter:
        model(x)
    return counter, model


def count_video(cfg: CfgNode) -> Tuple[FlopCounter, List[int]]:
    """One meta-device run: the per-video :class:`FlopCounter` and the kept patch tokens per tubelet step."""
    counter, model = _meta_run(cfg)
    state = model.last_state
    kept = (
        [model.spatial.num_tokens] * model.num_steps if state is None else list(state.kept_counts)
    )
    return counter, kept


def video_flops(cfg: CfgNode) -> FlopCounter:
    """The :class:`rgtp.counting.FlopCounter` of one video (all views) under ``cfg``; ``.paper.total`` is the
    number of the paper's tables (e.g. 1.0157e12 for ``configs/kinetics/keep_0215.yaml``)."""
    return _meta_run(cfg)[0]


def kept_counts(cfg: CfgNode) -> List[int]:
    """Kept patch tokens per tubelet step of a view under ``cfg`` (N on full steps; docs/method.md §3.4).

    Computed from the settings by :func:`rgtp.selection.kept_count`, the rule the spatial model follows (without
    running it; :func:`count_video` returns what a run kept).
    """
    side = cfg.DATA.TEST_CROP_SIZE // cfg.VIVIT.PATCH_SIZE
    steps = cfg.DATA.NUM_FRAMES // cfg.VIVIT.TUBELET_SIZE
    rgtp = to_rgtp_config(cfg)
    return [kept_count(rgtp, (side, side), frame_type(t, rgtp.reset_period)) for t in range(steps)]


def paper_row_flops(row) -> FlopCounter:
    """:func:`video_flops` of a ViViT row of the paper's tables (an :class:`rgtp.flops.PaperRow`), from its config
    ``configs/<kinetics|epic>/<name>.yaml`` (``base.yaml`` for the baseline); the counter
    ``rgtp.flops.table.paper_table`` takes as ``vivit_project``."""
    from rgtp.cli import repo_root

    name = "base" if row.config == "baseline" else row.config
    path = os.path.join(repo_root(), "configs", row.table, f"{name}.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file configs/{row.table}/{name}.yaml")
    return video_flops(load_config(parse_args(["--cfg", path])))
