"""RGTP ViViT recogniser (PySlowFast style): configs, registries, Kinetics-400 and EPIC-Kitchens-100 datasets,
multi-view test, spatial-feature cache, temporal fine-tuning and a multi-process launcher. Never imports detectron2.
"""

from . import datasets, models  # noqa: F401  (register models and datasets)
from .build import DATASET_REGISTRY, MODEL_REGISTRY, build_dataset, build_model
from .config import assert_and_infer_cfg, get_cfg, load_config, to_rgtp_config

__all__ = [
    "DATASET_REGISTRY",
    "MODEL_REGISTRY",
    "assert_and_infer_cfg",
    "build_dataset",
    "build_model",
    "get_cfg",
    "load_config",
    "to_rgtp_config",
]
