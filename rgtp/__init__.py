"""Rollout-Guided Token Pruning (RGTP) for video transformers, in plain PyTorch.

The models: :class:`PrunedViT` (the ViTDet backbone, detectron2 parameter names) and :class:`ClsViT` (the spatial
ViT of a factorised ViViT), both driven by one :class:`RGTPConfig` and carrying per-video state between frames
(:class:`StreamState` for the backbone, :class:`ClsViTState` for a batch of views). The pieces a user composes
into another model: the rollout (:func:`fuse_heads`, :func:`refresh_attention`, :func:`rollout_heatmap`,
:func:`anchor_mask_from_boxes`), tracking (:func:`warp_heatmap`), selection (:func:`select_tokens`,
:func:`grid_pattern`, :func:`frame_type`, :func:`kept_count`) and FLOP counting (:class:`FlopCounter`). The method and every setting are
described in docs/method.md.
"""

from .blocks import Attention, Block, BlockOutput, Mlp
from .cls_vit import ClsViT, ClsViTState
from .config import ConfigError, RGTPConfig
from .counting import FlopCounter
from .rollout import (
    anchor_mask_from_boxes,
    fuse_heads,
    refresh_attention,
    rollout_heatmap,
    update_streams,
)
from .selection import FrameType, frame_type, grid_pattern, kept_count, select_tokens
from .state import StreamState
from .tracking import warp_heatmap
from .vit import PrunedViT

__all__ = [
    "Attention",
    "Block",
    "BlockOutput",
    "ClsViT",
    "ClsViTState",
    "ConfigError",
    "FlopCounter",
    "FrameType",
    "Mlp",
    "PrunedViT",
    "RGTPConfig",
    "StreamState",
    "anchor_mask_from_boxes",
    "fuse_heads",
    "frame_type",
    "grid_pattern",
    "kept_count",
    "refresh_attention",
    "rollout_heatmap",
    "select_tokens",
    "update_streams",
    "warp_heatmap",
]
