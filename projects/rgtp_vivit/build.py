"""Registries (PySlowFast style) and the builders of models and datasets."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.config import CfgNode
from fvcore.common.registry import Registry

MODEL_REGISTRY = Registry("MODEL")
MODEL_REGISTRY.__doc__ = """Video recognition models; ``cls(cfg)`` builds one from the config."""

DATASET_REGISTRY = Registry("DATASET")
DATASET_REGISTRY.__doc__ = """Video datasets; ``cls(cfg, split)`` builds one from the config."""


def build_model(cfg: CfgNode, device: torch.device | str | None = None) -> torch.nn.Module:
    """Build ``cfg.MODEL.MODEL_NAME`` from the registry, on ``device`` (default CPU)."""
    from . import models  # noqa: F401  (registers the models)

    model = MODEL_REGISTRY.get(cfg.MODEL.MODEL_NAME)(cfg)
    return model.to(device) if device is not None else model


def build_dataset(name: str, cfg: CfgNode, split: str) -> Any:
    """Build the registered dataset ``name`` for ``split``."""
    from . import datasets  # noqa: F401  (registers the datasets)

    return DATASET_REGISTRY.get(name)(cfg, split)
