"""The factorised-encoder ViViT (docs/method.md §1b, §6.2) with RGTP in its spatial model.

Tubelet embedding Conv3d(3→C, kernel = stride = (2, 16, 16)) → for each of the T tubelet steps the spatial ViT with a
class token (:class:`rgtp.cls_vit.ClsViT`, pruned by RGTP) → the T class features plus a learned class token through
the temporal transformer (4 blocks) → final LN → class output → dropout → classifier (and, for EPIC, a noun head).

The views of a batch are processed in lock-step with one per-batch :class:`rgtp.cls_vit.ClsViTState`, reset for every
call, so B = 12 views of a video (or several videos) run as one batch.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from rgtp import counting
from rgtp.cls_vit import ClsViT, ClsViTState

from .build import MODEL_REGISTRY
from .config import to_rgtp_config


@MODEL_REGISTRY.register()
class ViViT(nn.Module):
    """ViViT-B factorised encoder. Parameters: ``tubelet_embed`` (Conv3d), ``spatial.*`` and ``temporal.*``
    (:class:`rgtp.cls_vit.ClsViT`), ``classifier`` and optionally ``noun_classifier``.

    ``forward(x)`` takes ``(B, 3, T_in, H, W)`` normalised clips (B = views) and returns a dict with ``logits``
    ``(B, classes)`` and, with a noun head, ``noun_logits``.
    """

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__()
        v = cfg.VIVIT
        side = cfg.DATA.TEST_CROP_SIZE // v.PATCH_SIZE
        self.num_steps = cfg.DATA.NUM_FRAMES // v.TUBELET_SIZE
        self.embed_dim = v.EMBED_DIM
        k = (v.TUBELET_SIZE, v.PATCH_SIZE, v.PATCH_SIZE)
        self.tubelet_embed = nn.Conv3d(3, v.EMBED_DIM, kernel_size=k, stride=k)
        common = dict(
            embed_dim=v.EMBED_DIM,
            num_heads=v.NUM_HEADS,
            mlp_ratio=v.MLP_RATIO,
            qkv_bias=v.QKV_BIAS,
            eps=v.LN_EPS,
        )
        self.spatial = ClsViT(
            (side, side), depth=v.SPATIAL_DEPTH, rgtp=to_rgtp_config(cfg), **common
        )
        self.temporal = ClsViT((self.num_steps, 1), depth=v.TEMPORAL_DEPTH, rgtp=None, **common)
        self.dropout = nn.Dropout(cfg.MODEL.DROPOUT_RATE)
        self.classifier = nn.Linear(v.EMBED_DIM, cfg.MODEL.NUM_CLASSES)
        self.noun_classifier: Optional[nn.Linear] = (
            nn.Linear(v.EMBED_DIM, cfg.MODEL.NUM_NOUN_CLASSES)
            if cfg.MODEL.NUM_NOUN_CLASSES > 0
            else None
        )
        self.last_state: Optional[ClsViTState] = None

    def embed(self, x: Tensor) -> Tensor:
        """Raw tubelet embeddings ``(B, T, N, C)`` of clips ``(B, 3, T_in, H, W)`` (not counted, as in the paper)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"ViViT expects clips of shape (B, 3, T, H, W), got {tuple(x.shape)}")
        e = self.tubelet_embed(x)  # (B, C, T, h, w)
        if e.shape[2] != self.num_steps:
            raise ValueError(
                f"clip of {x.shape[2]} frames gives {e.shape[2]} tubelet steps, the model expects {self.num_steps}"
            )
        return e.flatten(3).permute(0, 2, 3, 1)

    def spatial_features(self, x: Tensor) -> Tensor:
        """Per-step class features ``(B, T, C)`` of the (pruned) spatial model; one fresh state per call."""
        emb = self.embed(x)
        state = self.spatial.new_state() if self.spatial.pruning else None
        feats = [self.spatial(emb[:, t], state) for t in range(emb.shape[1])]
        self.last_state = state
        return torch.stack(feats, dim=1)

    def head(self, feats: Tensor) -> Dict[str, Tensor]:
        """Temporal transformer + classifier(s) on spatial features ``(B, T, C)``."""
        z = self.dropout(self.temporal(feats))
        out = {"logits": counting.linear(z, self.classifier)}
        if self.noun_classifier is not None:
            # the official model has no noun head; counted under the paper's rules like any classifier, so both
            # tallies include it (2.77 MFLOPs per EPIC video, invisible at the tables' precision)
            out["noun_logits"] = counting.linear(z, self.noun_classifier)
        return out

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Logits of clips ``(B, 3, T_in, H, W)``."""
        return self.head(self.spatial_features(x))
