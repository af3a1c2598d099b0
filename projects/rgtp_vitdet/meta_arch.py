"""The video meta-architecture: a detectron2 ``GeneralizedRCNN`` that carries one RGTP stream state per video.

Per test batch (one frame per video): reset the state of any video not seen before, run the pruned backbone on the
frame's kept tokens (``backbone(images, states)``), the RPN and ROI heads on the rebuilt dense map, then the
rollout from this frame's detections (boxes in padded-image pixels with score > ``MODEL.RGTP.ANCHOR_SCORE_THRESH``;
all tokens when none), which is stored for the next frame. The heads clip boxes to the resized frame, or with
``MODEL.RGTP.CLIP_BOXES_TO: padded`` (the official code) to the square padded canvas (docs/method.md §11).
Backbone FLOPs (forward + rollout update) are counted per batch with :class:`rgtp.counting.FlopCounter` and
attached to each output as ``rgtp`` statistics.

In training mode, and with ``MODEL.RGTP.ENABLED: False``, the model is the plain dense ViTDet.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList, Instances

from rgtp.config import ConfigError
from rgtp.counting import FlopCounter
from rgtp.rollout import anchor_mask_from_boxes
from rgtp.state import StreamState

from .config import behaviour_setting
from .regions import HeadFlopCounter
from .roi_heads import StreamingROIHeads
from .rpn import StreamingRPN

__all__ = ["RGTPVideoRCNN"]

logger = logging.getLogger("detectron2.rgtp_vitdet.meta_arch")


@META_ARCH_REGISTRY.register()
class RGTPVideoRCNN(GeneralizedRCNN):
    """Faster R-CNN over the pruned ViTDet backbone with per-video RGTP state (``MODEL.META_ARCHITECTURE:
    RGTPVideoRCNN``). Inputs carry ``video_id``; a batch may hold frames of several videos, one frame each.
    """

    @configurable
    def __init__(
        self,
        *,
        rgtp_enabled: bool = True,
        anchor_score_thresh: float = 0.1,
        count_flops: bool = True,
        max_streams: int = 64,
        clip_boxes_to: str = "image",
        incremental_head: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # the RPN head outputs of pruned frames reused outside the regions the pyramid reports changed
        self.streaming_rpn = StreamingRPN(
            self.proposal_generator, self.backbone, enabled=rgtp_enabled and incremental_head
        )
        # and the box predictions of proposals whose box and pooled features did not change
        self.streaming_roi_heads = StreamingROIHeads(
            self.roi_heads, self.backbone, enabled=rgtp_enabled and incremental_head
        )
        if rgtp_enabled and incremental_head:
            off = [
                name
                for name, part in (
                    ("RPN", self.streaming_rpn),
                    ("ROI heads", self.streaming_roi_heads),
                )
                if not part.enabled
            ]
            if off:
                raise ConfigError(
                    f"MODEL.RGTP.INCREMENTAL_HEAD=True, but the incremental path does not support this model's "
                    f"{' and '.join(off)} (it handles a StreamingFeaturePyramid backbone, detectron2's RPN with a "
                    f"StandardRPNHead, and StandardROIHeads with a box branch only, pooled by ROIAlign); set "
                    f"MODEL.RGTP.INCREMENTAL_HEAD False"
                )
        if clip_boxes_to not in ("image", "padded"):
            raise ValueError(f"clip_boxes_to={clip_boxes_to!r}: allowed 'image' or 'padded'")
        self.rgtp_enabled = rgtp_enabled
        self.clip_boxes_to = clip_boxes_to
        self.anchor_score_thresh = anchor_score_thresh
        self.count_flops = count_flops
        self.max_streams = max_streams
        self._states: "OrderedDict[str, StreamState]" = OrderedDict()
        self._last_frame: Dict[str, Optional[int]] = {}

    @classmethod
    def from_config(cls, cfg) -> dict:
        ret = super().from_config(cfg)
        ret.update(
            rgtp_enabled=bool(cfg.MODEL.RGTP.ENABLED),
            anchor_score_thresh=float(cfg.MODEL.RGTP.ANCHOR_SCORE_THRESH),
            count_flops=bool(cfg.MODEL.RGTP.COUNT_FLOPS),
            max_streams=max(4 * int(cfg.TEST.VIDEOS_PER_BATCH), 8),
            clip_boxes_to=behaviour_setting(cfg, "CLIP_BOXES_TO"),
            incremental_head=bool(cfg.MODEL.RGTP.INCREMENTAL_HEAD),
        )
        return ret

    @property
    def net(self) -> torch.nn.Module:
        """The pruned ViT inside the feature pyramid."""
        return self.backbone.net

    def stream_state(self, video_id: str) -> Optional[StreamState]:
        """The RGTP state of a video (None before its first frame or after it was evicted)."""
        return self._states.get(video_id)

    @property
    def num_streams(self) -> int:
        """How many videos currently have an RGTP state."""
        return len(self._states)

    def reset_streams(self) -> None:
        """Forget every video's state (e.g. before evaluating another split)."""
        self._states.clear()
        self._last_frame.clear()

    def _streams_for(self, batched_inputs: List[dict]) -> List[StreamState]:
        ids = []
        for i, x in enumerate(batched_inputs):
            if "video_id" not in x:
                raise KeyError(
                    f"input {i} has no 'video_id': the video model needs it to carry state between frames (use "
                    f"rgtp_vitdet.data.VIDTestMapper, or set MODEL.RGTP.ENABLED False for single images)"
                )
            ids.append(str(x["video_id"]))
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"a batch holds two frames of one video ({ids}); batch one frame per video"
            )
        states = []
        for vid, x in zip(ids, batched_inputs):
            frame = x.get("frame_index")
            frame = int(frame) if frame is not None else None
            s = self._states.get(vid)
            if s is None:
                s = StreamState()
                s.reset()
                self._states[vid] = s
            else:
                self._states.move_to_end(vid)
                last = self._last_frame.get(vid)
                if frame is not None and last is not None and frame != last + 1:
                    # Not the next frame of this video: a new pass over it (or a gap); start afresh.
                    s.reset()
            self._last_frame[vid] = frame
            states.append(s)
        # Drop the least recently used streams (videos that ended) beyond the bound.
        while len(self._states) > max(self.max_streams, len(ids)):
            old, _ = self._states.popitem(last=False)
            self._last_frame.pop(old, None)
        return states

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[list] = None,
        do_postprocess: bool = True,
    ) -> list:
        """Detect on one frame per video, then update each video's rollout heatmap from these detections."""
        assert not self.training
        assert detected_instances is None, "RGTPVideoRCNN does not take precomputed instances"
        start = time.perf_counter()
        images = self.preprocess_image(batched_inputs)
        counter = FlopCounter() if self.count_flops else None
        head_flops = HeadFlopCounter() if self.count_flops else None
        states = self._streams_for(batched_inputs) if self.rgtp_enabled else None
        with counter if counter is not None else _null(), head_flops or _null():
            features = self.backbone(images.tensor, states)
        heads_images = images
        if self.clip_boxes_to == "padded":
            # the official code gives the heads the padded canvas as the image size: proposals and detections
            # are clipped to it, not to the frame
            canvas = tuple(images.tensor.shape[-2:])
            heads_images = ImageList(images.tensor, [canvas] * len(images))
        with head_flops or _null():
            proposals = self.streaming_rpn.proposals(heads_images, features, states)
            results = self.streaming_roi_heads.detect(heads_images, features, proposals, states)
        if states is not None:
            grid = states[0].grid
            stride = self.net.patch_size
            masks = torch.stack(
                [
                    anchor_mask_from_boxes(
                        r.pred_boxes.tensor, grid, stride, valid=r.scores > self.anchor_score_thresh
                    )
                    for r in results
                ]
            )
            with counter if counter is not None else _null():
                self.net.update_heatmap(states, masks)
        elapsed = time.perf_counter() - start
        b = len(batched_inputs)
        stats = []
        for i in range(b):
            st = {
                "seconds": elapsed / b,
                "frame_type": "dense" if states is None else states[i].frame_type.value,
                "reset_cause": None if states is None else states[i].reset_cause,
            }
            if counter is not None:
                st["gflops_paper"] = counter.paper.total / b / 1e9
                st["gflops_executed"] = counter.executed.total / b / 1e9
            if head_flops is not None:  # pyramid, RPN and box head: outside the paper's convention
                st["gflops_head_dense"] = head_flops.dense / b / 1e9
                st["gflops_head_executed"] = head_flops.executed / b / 1e9
            stats.append(st)
        if do_postprocess:
            assert not torch.jit.is_scripting()
            if self.clip_boxes_to == "padded":
                outs = [
                    {"instances": _rescale_unclipped(r, size, x.get("height"), x.get("width"))}
                    for r, x, size in zip(results, batched_inputs, images.image_sizes)
                ]
            else:
                outs = GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        else:
            outs = results
            return outs
        for o, st in zip(outs, stats):
            o["rgtp"] = st
        return outs


def _rescale_unclipped(
    r: Instances, size: tuple, height: Optional[int], width: Optional[int]
) -> Instances:
    """Detections of the heads (clipped to the padded canvas) in output pixels: scaled by output / resized frame
    size like detectron2's ``detector_postprocess``, but neither clipped to the frame nor filtered for empty boxes
    (the official code evaluates them as the heads give them)."""
    height = size[0] if height is None else height
    width = size[1] if width is None else width
    out = Instances((height, width), **r.get_fields())
    out.pred_boxes.scale(width / size[1], height / size[0])
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
