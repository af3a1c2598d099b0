"""The pruned ViTDet backbone for detectron2: the core's :class:`rgtp.vit.PrunedViT` as a detectron2 ``Backbone``,
inside detectron2's own ``SimpleFeaturePyramid`` (so that parameter names are exactly detectron2 ViTDet's:
``backbone.net.blocks.0.attn.qkv.weight``, ``backbone.simfp_2.0.weight``, ...).

With ``incremental`` on (``MODEL.RGTP.INCREMENTAL_HEAD``), the pyramid keeps per-stream caches of its stages'
inputs and outputs and recomputes, on a pruned frame, only the regions the kept tokens change
(:mod:`rgtp_vitdet.regions`); it reports them (:meth:`StreamingFeaturePyramid.changed_regions`) so that the RPN
head can do the same (:mod:`rgtp_vitdet.rpn`). Full, reset and first frames run the dense pyramid and refill the
caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid
from torch import Tensor, nn

from rgtp.config import ConfigError
from rgtp.selection import FrameType, frame_type, is_full_frame
from rgtp.state import StreamState
from rgtp.vit import PrunedViT

from .config import rgtp_config_from_cfg
from .regions import (
    DENSE_ABOVE,
    TILE,
    StreamCaches,
    cache_key,
    charge_head,
    conv_macs,
    dilate,
    downsample,
    is_pointwise,
    is_spatial_conv,
    module_macs,
    pointwise_on_rows,
    rects,
    run_on_rects,
    token_masks,
    upsample,
    upscale,
)

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


@dataclass
class _StagePlan:
    """A pyramid stage as [max-pool s×s]? → pointwise layers (upsampling by ``scale``) → one spatial conv."""

    pool: int
    pointwise: List[nn.Module]
    scale: int
    conv: nn.Module

    @classmethod
    def of(cls, stage: nn.Module) -> Optional["_StagePlan"]:
        layers = list(stage) if isinstance(stage, nn.Sequential) else [stage]
        pool = 1
        if layers and isinstance(layers[0], nn.MaxPool2d):
            m = layers.pop(0)
            k, s = m.kernel_size, m.stride
            if not (k == s and isinstance(k, int) and m.padding == 0 and m.dilation == 1):
                return None
            pool = k
        if not layers or not is_spatial_conv(layers[-1]):
            return None
        pointwise = layers[:-1]
        if not all(is_pointwise(m) for m in pointwise):
            return None
        scale = 1
        for m in pointwise:
            scale *= upscale(m)
        return cls(pool, pointwise, scale, layers[-1])

    def inputs(self, x: Tensor) -> Tensor:
        """The spatial conv's input (dense): the same modules in the same order as the stage (a copy of ``x``
        when the stage has none: the cache is updated in place)."""
        if self.pool > 1:
            x = F.max_pool2d(x, self.pool, self.pool)
        elif not self.pointwise:
            x = x.clone()
        for m in self.pointwise:
            x = m(x)
        return x


@dataclass
class _PyramidEntry:
    """What one stream's pyramid carries to its next frame."""

    t: int
    key: Tuple[Any, ...]
    inputs: List[Tensor]  # per stage: the spatial conv's input (C, H, W)
    outputs: List[Tensor]  # per stage: the stage's output (C, H, W)
    # per level, where this frame's outputs may differ from the previous frame's (None: everywhere)
    changed: Optional[Dict[str, Tensor]] = None


class StreamingFeaturePyramid(SimpleFeaturePyramid):
    """detectron2's ``SimpleFeaturePyramid`` (same modules and parameter names) whose ``forward`` also takes the
    RGTP stream state of every frame and hands it to the pruned ViT: ``backbone(images, states)``; without states
    the backbone is dense, as detectron2's. With ``incremental`` (set by ``MODEL.RGTP.INCREMENTAL_HEAD``), pruned
    frames recompute only the changed regions of each level (module docstring)."""

    def __init__(self, *args: Any, incremental: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plans = [_StagePlan.of(stage) for stage in self.stages]
        if incremental and not self.supports_incremental:
            raise ConfigError(
                "MODEL.RGTP.INCREMENTAL_HEAD=True needs pyramid stages of pointwise layers and one spatial conv "
                "and a LastLevelMaxPool top block; set it False for this backbone"
            )
        self.incremental = incremental
        #: per-stream caches of the incremental head (slot "pyramid"; the RPN keeps its own in slot "rpn")
        self.head_caches = StreamCaches()
        self._dense_macs: Dict[Tuple[Any, ...], int] = {}

    @property
    def supports_incremental(self) -> bool:
        """Whether every stage and the top block have the structure the incremental path recomputes."""
        top_ok = self.top_block is None or isinstance(self.top_block, LastLevelMaxPool)
        return all(p is not None for p in self._plans) and top_ok

    def forward(
        self, x: Tensor, states: Optional[Sequence[StreamState]] = None
    ) -> Dict[str, Tensor]:
        """Pyramid features ``{"p2": …, "p6": …}`` of the frames ``x`` (B, 3, H, W), one stream state each."""
        streaming = states is not None and self.incremental and not self.training
        if streaming:
            self._release_before(states)
        bottom_up = self.net(x, states)
        features = bottom_up[self.in_feature]
        if streaming:
            results = self._streaming_stages(features, states)
        else:
            macs = self._stage_macs(features.shape)
            charge_head(executed=macs, dense=macs)
            results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            name = self.top_block.in_feature
            top_in = bottom_up.get(name)
            if top_in is None:
                top_in = results[self._out_features.index(name)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))

    def changed_regions(self, states: Sequence[StreamState]) -> List[Optional[Dict[str, Tensor]]]:
        """Per stream, where its last frame's pyramid outputs may differ from the frame before: ``{level: (H, W)
        bool}``, or None where everything may (dense frames, incremental path off)."""
        out: List[Optional[Dict[str, Tensor]]] = []
        for s in states:
            e = self.head_caches.get(s, "pyramid")
            out.append(e.changed if e is not None and e.t == s.t else None)
        return out

    def cache_bytes(self, state: StreamState) -> int:
        """Bytes of the pyramid caches of one stream."""
        return self.head_caches.nbytes(state, "pyramid")

    # ------------------------------------------------------------------------------------------------ internals
    def _stage_macs(self, shape: Tuple[int, ...], stage: Optional[int] = None) -> int:
        """MACs of the dense stages (one of them) on a backbone map of ``shape``."""
        key = (tuple(shape), stage)
        if key not in self._dense_macs:
            stages = self.stages if stage is None else [self.stages[stage]]
            self._dense_macs[key] = sum(module_macs(st, tuple(shape))[0] for st in stages)
        return self._dense_macs[key]

    def _release_before(self, states: Sequence[StreamState]) -> None:
        """Drop the head caches (pyramid and RPN) of streams whose next frame is a full one (first, periodic reset):
        the dense head refills them, and the old ones need not live through the frame."""
        cfg = getattr(self.net, "rgtp", None)
        for s in states:
            if s.t < 0 or cfg is None or is_full_frame(frame_type(s.t + 1, cfg.reset_period), cfg):
                self.head_caches.pop(s)

    def _key(self, features: Tensor) -> Tuple[Any, ...]:
        """What the cached values depend on besides the frames (:func:`rgtp_vitdet.regions.cache_key`)."""
        return cache_key(self, [features])

    def _streaming_stages(self, features: Tensor, states: Sequence[StreamState]) -> List[Tensor]:
        b, _, h, w = features.shape
        key = self._key(features)
        charge_head(dense=self._stage_macs(features.shape))
        inc: List[int] = []
        for i, s in enumerate(states):
            e = self.head_caches.get(s, "pyramid")
            if (
                e is not None
                and s.frame_type == FrameType.PRUNED
                and s.kept is not None
                and s.kept.numel() < h * w  # keeping every token: the dense path, bit for bit
                and e.t == s.t - 1
                and e.key == key
            ):
                inc.append(i)
            else:
                self.head_caches.pop(s, "pyramid")  # refilled below: release it first
        dense = [i for i in range(b) if i not in inc]
        entries = {i: self.head_caches.get(states[i], "pyramid") for i in inc}
        results: List[Tensor] = []
        new_in: Dict[int, List[Tensor]] = {i: [] for i in range(b)}
        new_out: Dict[int, List[Tensor]] = {i: [] for i in range(b)}
        changed: Dict[int, Dict[str, Tensor]] = {i: {} for i in inc}
        sub = features if len(dense) == b else features[dense] if dense else None
        masks = token_masks([states[i].kept for i in inc], (h, w), features.device) if inc else None
        rows = features.permute(0, 2, 3, 1)  # (B, h, w, C) view of the backbone's token rows
        for si, plan in enumerate(self._plans):
            assert plan is not None
            if sub is not None:
                a = plan.inputs(sub)
                p = plan.conv(a)
                charge_head(executed=self._stage_macs(sub.shape, si))
                if not inc:
                    results.append(p)
                    for j, i in enumerate(dense):
                        new_in[i].append(a[j])
                        new_out[i].append(p[j])
                    continue
            size = (h * plan.scale // plan.pool, w * plan.scale // plan.pool)
            out = features.new_empty(
                (b, plan.conv.out_channels, *size), dtype=entries[inc[0]].outputs[si].dtype
            )
            if sub is not None:
                out[dense] = p.to(out.dtype)
                for j, i in enumerate(dense):
                    new_in[i].append(a[j])
                    new_out[i].append(out[i])
            assert masks is not None
            self._stage_incremental(si, plan, features, rows, masks, inc, entries, out, changed)
            for i in inc:
                new_in[i].append(entries[i].inputs[si])
                new_out[i].append(out[i])
            results.append(out)
        for i, s in enumerate(states):
            ch = changed.get(i)
            if ch is not None and self.top_block is not None:
                top = self.top_block.in_feature
                src = ch.get(top)
                for name in self._out_features[len(self._plans) :]:
                    src = src[..., ::2, ::2]  # LastLevelMaxPool: kernel 1, stride 2
                    ch[name] = src
            self.head_caches.set(s, "pyramid", _PyramidEntry(s.t, key, new_in[i], new_out[i], ch))
        return results

    def _stage_incremental(
        self,
        si: int,
        plan: _StagePlan,
        features: Tensor,
        rows: Tensor,
        masks: Tensor,
        inc: List[int],
        entries: Dict[int, _PyramidEntry],
        out: Tensor,
        changed: Dict[int, Dict[str, Tensor]],
    ) -> None:
        """Stage ``si`` on the pruned streams ``inc``: the pointwise layers on the changed pixels (scattered into
        the cached conv inputs), the conv on the rectangles of its changed outputs (into ``out``).
        """
        name = self._out_features[si]
        if plan.pool > 1:
            src = F.max_pool2d(features[inc], plan.pool, plan.pool).permute(0, 2, 3, 1)
            m = downsample(masks, plan.pool)
        else:
            src = rows if len(inc) == rows.shape[0] else rows[inc]
            m = masks
        vals = pointwise_on_rows(
            plan.pointwise, src[m]
        )  # (n, C', S, S), in raster order per stream
        coords = m.nonzero()
        counts = m.flatten(1).sum(1).tolist()
        s = plan.scale
        block = torch.arange(s, device=features.device)
        start = 0
        conv_in: List[Tensor] = []
        rect_lists = []
        for j, i in enumerate(inc):
            a = entries[i].inputs[si]
            n = counts[j]
            ys = coords[start : start + n, 1, None, None] * s + block[None, :, None]  # (n, s, 1)
            xs = coords[start : start + n, 2, None, None] * s + block[None, None, :]  # (n, 1, s)
            a[:, ys, xs] = vals[start : start + n].transpose(0, 1).to(a.dtype)  # s×s blocks
            start += n
            grown = dilate(upsample(m[j], s), plan.conv.padding[0])
            changed[i][name] = grown
            rs, cover = rects(grown, TILE)
            out[i].copy_(entries[i].outputs[si])
            if cover > DENSE_ABOVE:
                out[i] = plan.conv(a[None])[0]
                charge_head(executed=conv_macs(plan.conv, out[i].numel()))
                rs = []
            conv_in.append(a)
            rect_lists.append(rs)
        for (y0, y1, x0, x1), idx, o in run_on_rects(plan.conv, conv_in, rect_lists):
            for k, j in enumerate(idx):
                out[inc[j], :, y0:y1, x0:x1] = o[k]


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
    incremental = bool(cfg.MODEL.RGTP.ENABLED) and bool(cfg.MODEL.RGTP.INCREMENTAL_HEAD)
    return StreamingFeaturePyramid(
        net=net,
        in_feature=v.OUT_FEATURE,
        out_channels=v.PYRAMID_CHANNELS,
        scale_factors=tuple(float(s) for s in v.PYRAMID_SCALES),
        top_block=LastLevelMaxPool(),
        norm=v.PYRAMID_NORM,
        square_pad=v.INPUT_SIZE,
        incremental=incremental,
    )
