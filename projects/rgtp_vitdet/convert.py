"""Map a ViTDet checkpoint file onto the parameter names of the RGTP detector and check it against a config's model
(``tools/convert_vitdet_checkpoint.py``).

Layouts (:func:`rgtp_vitdet.checkpoint.detect_layout`): ``detectron2`` (unchanged), ``ddp`` (``module.`` prefixes),
``mae`` (an MAE-pretrained bare ViT-B), ``eventful`` (the converted names of the official RGTP / Eventful code). With
a config, missing, unexpected and wrongly shaped keys are a :class:`CheckpointError` listing them (missing keys are
allowed with ``partial``), and nothing is written. The output ``{"model": ...}`` is written atomically.
"""

from __future__ import annotations

import logging
from typing import Dict, Sequence

import torch

from rgtp.fileio import atomic_torch_save

from .checkpoint import CheckpointError, convert_state_dict, detect_layout, load_state_dict_file
from .config import load_config

__all__ = ["convert_checkpoint_file", "LAYOUTS"]

LAYOUTS = ("auto", "detectron2", "ddp", "mae", "eventful")

logger = logging.getLogger("rgtp_vitdet.convert")


def _summary(title: str, keys: Sequence[str], shown: int = 5) -> str:
    more = f", ... ({len(keys) - shown} more)" if len(keys) > shown else ""
    return f"; {len(keys)} {title}: {', '.join(keys[:shown])}{more}" if keys else ""


def check_against_config(
    state: Dict[str, torch.Tensor],
    config_file: str,
    opts: Sequence[str] = (),
    partial: bool = False,
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` fits the model of ``config_file`` (+ ``opts``), built on the
    ``meta`` device (shapes only: a full-size model in a second, nothing allocated)."""
    from detectron2.modeling import build_model

    cfg = load_config(config_file, opts)
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model_sd = build_model(cfg).state_dict()
    missing = sorted(set(model_sd) - set(state))
    unexpected = sorted(set(state) - set(model_sd))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(model_sd[k].shape)}"
        for k in set(state) & set(model_sd)
        if tuple(state[k].shape) != tuple(model_sd[k].shape)
    )
    for title, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrongly shaped", shapes),
    ):
        if keys:
            logger.info(f"{len(keys)} {title} keys:\n  " + "\n  ".join(keys))
    if unexpected or shapes or (missing and not partial):
        raise CheckpointError(
            f"the detector checkpoint does not fit the model of {config_file} (keys listed above), nothing "
            f"written"
            + _summary("unexpected", unexpected)
            + _summary("wrongly shaped", shapes)
            + _summary("missing" + ("" if partial else " (--partial allows them)"), missing)
        )
    if missing:
        logger.info("%d missing keys (allowed by --partial)", len(missing))


def convert_checkpoint_file(
    input_path: str,
    output_path: str,
    layout: str = "auto",
    config_file: str = "",
    opts: Sequence[str] = (),
    partial: bool = False,
) -> Dict[str, torch.Tensor]:
    """Convert ``input_path`` from ``layout`` (``auto`` detects it), check it against the model of ``config_file``
    when given, and write ``{"model": state_dict}`` to ``output_path``; returns the converted state.
    """
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}: allowed {', '.join(LAYOUTS)}")
    sd, _ = load_state_dict_file(input_path)
    sd = {k: torch.as_tensor(v) for k, v in sd.items()}
    layout = detect_layout(sd) if layout == "auto" else layout
    logger.info(f"{input_path}: {len(sd)} keys, layout {layout!r}")
    out = convert_state_dict(sd, layout)
    if config_file:
        check_against_config(out, config_file, opts, partial)
    atomic_torch_save(
        {"model": out, "__author__": "rgtp_vitdet convert_vitdet_checkpoint"}, output_path
    )
    logger.info(f"wrote {len(out)} keys to {output_path}")
    return out
