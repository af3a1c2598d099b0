"""The config of a render: detectron2 (detection) or fvcore (recognition), and which task a config file is."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Optional, Sequence

from .source import DemoError

__all__ = ["setup_detection_cfg", "setup_recognition_cfg", "config_task", "resolve_task"]

logger = logging.getLogger("rgtp.demo_video")

_RECOGNITION_KEYS = {"VIVIT", "DATA", "DATA_LOADER", "CACHE", "NUM_GPUS", "RNG_SEED"}
_DETECTION_KEYS = {"DATASETS", "INPUT", "DATALOADER", "SOLVER.IMS_PER_BATCH", "VERSION"}


def setup_detection_cfg(config_file: str, opts: Sequence[str]):
    """The detectron2 config of ``config_file`` with the project keys and the ``KEY VALUE`` overrides."""
    from detectron2.config import get_cfg
    from rgtp_vitdet import add_rgtp_config

    if not os.path.isfile(config_file):
        raise DemoError(f"config file {config_file!r} does not exist")
    cfg = get_cfg()
    add_rgtp_config(cfg)
    try:
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError) as e:
        raise DemoError(f"bad detection config {config_file} (or --opts): {e}") from None
    return cfg


def setup_recognition_cfg(config_file: str, opts: Sequence[str]):
    """The fvcore config of the recogniser (``load_config``: defaults, file, overrides, validated)."""
    from rgtp_vivit.config import load_config

    if not os.path.isfile(config_file):
        raise DemoError(f"config file {config_file!r} does not exist")
    return load_config(argparse.Namespace(cfg_files=[config_file], opts=list(opts)))


def _yaml_keys(path: str, depth: int = 0) -> set:
    """Top-level keys and MODEL.* keys of a YAML config and its ``_BASE_`` chain."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return set()
    if not isinstance(data, dict):
        return set()
    keys = set(data)
    if isinstance(data.get("MODEL"), dict):
        keys |= {f"MODEL.{k}" for k in data["MODEL"]}
    base = data.get("_BASE_")
    if isinstance(base, str) and depth < 8:
        keys |= _yaml_keys(os.path.join(os.path.dirname(path), base), depth + 1)
    return keys


def config_task(config_file: str) -> Optional[str]:
    """``"detection"`` or ``"recognition"`` from the keys of ``config_file`` (None when they do not tell)."""
    keys = _yaml_keys(config_file)
    rec = bool(keys & _RECOGNITION_KEYS) or bool(
        keys & {"MODEL.MODEL_NAME", "MODEL.NUM_NOUN_CLASSES"}
    )
    det = bool(keys & _DETECTION_KEYS) or bool(
        keys
        & {"MODEL.META_ARCHITECTURE", "MODEL.VIT", "MODEL.RGTP", "MODEL.ROI_HEADS", "MODEL.WEIGHTS"}
    )
    if rec != det:
        return "recognition" if rec else "detection"
    return None


def resolve_task(config_file: str, task: Optional[str]) -> str:
    """The task: ``task`` when given (an error when the config is of the other task), else the config's."""
    found = config_task(config_file)
    if task is None:
        if found == "recognition":
            logger.info("%s is a recognition config: running the recognition demo", config_file)
        return found or "detection"
    if found is not None and found != task:
        raise DemoError(
            f"{config_file} is a {found} config but --task {task} was given: drop --task (the task is "
            f"read from the config) or pass --task {found}"
        )
    return task
