"""The pruned ViTDet backbone for detectron2: the core's :class:`rgtp.vit.PrunedViT` as a detectron2 ``Backbone``,
inside detectron2's own ``SimpleFeaturePyramid`` (so that parameter names are exactly detectron2 ViTDet's:
``backbone.net.blocks.0.attn.qkv.weight``, ``backbone.simfp_2.0.weight``, ...)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid
from torch import Tensor

from rgtp.state import StreamState
from rgtp.vit import PrunedViT

from .config import rgtp_config_from_cfg

__all__ = [
    "D2PrunedViT",
    "StreamingFeaturePyramid",
    "build_rgtp_vitdet_backbone",
    "build_pruned_vit",
]


class D2PrunedViT(PrunedViT, Backbone):
    """:class:`rgtp.vit.PrunedViT` that is also a detectron2 :class:`Backbone` (``output_shape`` and the
    ``size_divisibility`` of the patch grid)."""

    @property
    def size_divisibility(self) -> int:
        """Inputs must be multiples of the patch size."""
        return self.patch_size

    def output_shape(self) -> dict[str, ShapeSpec]:
        """One feature map of ``embed_dim`` channels at stride ``patch_size``."""
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


class StreamingFeaturePyramid(SimpleFeaturePyramid):
    """detectron2's ``SimpleFeaturePyramid`` (same modules and parameter names) whose ``forward`` also takes the
    RGTP stream state of every frame and hands it to the pruned ViT: ``backbone(images, states)``; without states
    the backbone is dense, as detectron2's."""

    def forward(
        self, x: Tensor, states: Optional[Sequence[StreamState]] = None
    ) -> Dict[str, Tensor]:
        """Pyramid features ``{"p2": …, "p6": …}`` of the frames ``x`` (B, 3, H, W), one stream state each."""
        bottom_up = self.net(x, states)
        features = bottom_up[self.in_feature]
        results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            name = self.top_block.in_feature
            top_in = bottom_up.get(name)
            if top_in is None:
                top_in = results[self._out_features.index(name)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


def build_pruned_vit(cfg: CfgNode) -> D2PrunedViT:
    """The pruned ViT from ``MODEL.VIT.*`` with the RGTP settings of ``MODEL.RGTP.*``."""
    v = cfg.MODEL.VIT
    return D2PrunedViT(
        img_size=v.IMG_SIZE,
        patch_size=v.PATCH_SIZE,
        in_chans=3,
        embed_dim=v.EMBED_DIM,
        depth=v.DEPTH,
        num_heads=v.NUM_HEADS,
        mlp_ratio=v.MLP_RATIO,
        qkv_bias=v.QKV_BIAS,
        use_abs_pos=v.USE_ABS_POS,
        use_rel_pos=v.USE_REL_POS,
        window_size=v.WINDOW_SIZE,
        window_block_indexes=tuple(v.WINDOW_BLOCK_INDEXES),
        pretrain_img_size=v.PRETRAIN_IMG_SIZE,
        pretrain_use_cls_token=v.PRETRAIN_USE_CLS_TOKEN,
        out_feature=v.OUT_FEATURE,
        attention=v.ATTENTION,
        rgtp=rgtp_config_from_cfg(cfg),
    )


@BACKBONE_REGISTRY.register()
def build_rgtp_vitdet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> StreamingFeaturePyramid:
    """ViTDet's backbone with RGTP: the pruned ViT in a simple feature pyramid (scales 4, 2, 1, 0.5, LN, p6 by
    max-pool, square padding to ``MODEL.VIT.INPUT_SIZE``). Registered as ``MODEL.BACKBONE.NAME:
    build_rgtp_vitdet_backbone``."""
    v = cfg.MODEL.VIT
    net = build_pruned_vit(cfg)
    return StreamingFeaturePyramid(
        net=net,
        in_feature=v.OUT_FEATURE,
        out_channels=v.PYRAMID_CHANNELS,
        scale_factors=tuple(float(s) for s in v.PYRAMID_SCALES),
        top_block=LastLevelMaxPool(),
        norm=v.PYRAMID_NORM,
        square_pad=v.INPUT_SIZE,
    )
