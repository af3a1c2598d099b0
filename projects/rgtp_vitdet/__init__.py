"""RGTP for detectron2: pruned ViTDet for video object detection on ImageNet VID.

Importing this package registers the backbone ``build_rgtp_vitdet_backbone``, the meta-architecture
``RGTPVideoRCNN`` and the datasets ``vid_val``, ``vid_train`` (ILSVRC2015 layout), ``vid_val_json``,
``vid_train_json`` (COCO-style JSON layout) and ``vid_val_cuts``, ``vid_train_cuts`` (the demo videos with cuts).
"""

from .backbone import D2PrunedViT, build_rgtp_vitdet_backbone
from .checkpoint import CheckpointError, RGTPCheckpointer, convert_state_dict
from .config import ConfigError, add_rgtp_config, rgtp_config_from_cfg, validate_config
from .data import VideoInferenceSampler, VIDTestMapper, build_vid_test_loader
from .evaluator import VIDEvaluator
from .meta_arch import RGTPVideoRCNN
from .predictor import VideoPredictor
from .vid import VID_CLASSES, VID_WNIDS, DatasetError, register_all_vid

register_all_vid()

__all__ = [
    "add_rgtp_config",
    "validate_config",
    "rgtp_config_from_cfg",
    "ConfigError",
    "D2PrunedViT",
    "build_rgtp_vitdet_backbone",
    "RGTPVideoRCNN",
    "VideoPredictor",
    "RGTPCheckpointer",
    "CheckpointError",
    "convert_state_dict",
    "VIDTestMapper",
    "VideoInferenceSampler",
    "build_vid_test_loader",
    "VIDEvaluator",
    "VID_CLASSES",
    "VID_WNIDS",
    "DatasetError",
]
