"""What the benchmark times: one case per ``--model``, each with a dense frame and RGTP full, pruned and reset frames
(ViViT: dense and RGTP videos).

A case offers ``dense()``, ``full()``, ``pruned()`` and ``reset()`` (one frame per stream each), ``prepare(kind)``
(untimed set-up before a timed call of that kind), ``flops()``, ``cache_bytes()`` and ``full_fraction``. It builds
only what it times.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List, Optional

import torch

from rgtp.config import RGTPConfig
from rgtp.counting import FlopCounter
from rgtp.flops import VID_VAL_FULL_FRAME_FRACTION
from rgtp.state import StreamState
from rgtp.vit import PrunedViT

from .capture import StaticCapture

#: docs/method.md §5.2: the fraction of full frames in ImageNet VID val.
VID_FULL_FRACTION = VID_VAL_FULL_FRAME_FRACTION
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def panning_frames(
    batch: int, size: int, device: torch.device, dtype: torch.dtype, n: int = 16
) -> List[torch.Tensor]:
    """``n`` frames (batch, 3, size, size) of a slowly panning random image."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(batch, 3, size + 16, size + 16, generator=g)
    return [
        base[:, :, i % 16 : i % 16 + size, :size].to(device, dtype).contiguous() for i in range(n)
    ]


class VitdetBackboneCase(StaticCapture):
    """ViTDet-B backbone (+ rollout) on a batch of ``batch`` streams at ``size``×``size``."""

    full_fraction = VID_FULL_FRACTION

    def __init__(
        self,
        args: argparse.Namespace,
        keep: int,
        vit: type = PrunedViT,
        config: type = RGTPConfig,
        state: type = StreamState,
    ) -> None:
        """``vit``, ``config`` and ``state``: the core's classes (another revision's for ``--compare-to``)."""
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.size = args.size
        self.grid = args.size // 16
        pool = 2 if args.rollout == "forward" else 1
        self.cfg = config(keep_tokens=keep, rollout_mode=args.rollout, rollout_pool=pool)
        torch.manual_seed(0)
        self.model = vit(img_size=1024, rel_pos_size=64, rgtp=self.cfg).eval()
        self.model.to(self.device, self.dtype)
        self.frames = panning_frames(args.batch, args.size, self.device, self.dtype)
        self.batch = args.batch
        self.states = [state() for _ in range(args.batch)]
        self.i = 0
        self._anchors = torch.zeros(
            args.batch, self.grid, self.grid, dtype=torch.bool, device=self.device
        )
        self.capture = "none"
        self._update: Callable[..., torch.Tensor] = self.model.update_heatmap
        self._dense_graph = None
        self._pruned_graph = None
        self._static = None

    def _next(self) -> torch.Tensor:
        self.i += 1
        return self.frames[self.i % len(self.frames)]

    def prepare(self, kind: str) -> None:
        """Untimed set-up before a timed ``kind`` frame (the backbone case needs none: :meth:`pruned` and
        :meth:`reset` set the frame index themselves)."""

    def release_streams(self) -> None:
        """Forget the streams (their caches go); the next RGTP frame is a first frame."""
        for s in self.states:
            s.reset()

    def dense(self) -> None:
        if self._dense_graph is not None:
            self._static_dense_x.copy_(self._next())
            self._dense_graph.replay()
            return
        self.model(self._next())

    def _rgtp_frame(
        self, x: Optional[torch.Tensor] = None, states: Optional[List[StreamState]] = None
    ) -> torch.Tensor:
        """One RGTP frame (backbone + rollout update) of ``states`` (default: the benchmark's streams)."""
        states = self.states if states is None else states
        out = self.model(self._next() if x is None else x, states)
        self._update(states, self._anchors)
        return next(iter(out.values()))

    def full(self) -> None:
        """A first frame: every token, the caches filled from nothing."""
        self.full_output()

    def full_output(self) -> torch.Tensor:
        """:meth:`full`, returning the feature map."""
        for s in self.states:
            s.reset()
        return self._rgtp_frame()

    def reset(self) -> None:
        """A periodic reset frame: every token, the caches of the last frames refilled."""
        for s in self.states:
            if s.t < 0:
                raise RuntimeError("reset() needs a frame before")
            s.t = self.cfg.reset_period - 1
        self._rgtp_frame()

    def _stay_pruned(self) -> None:
        for s in self.states:
            if s.t < 0:
                raise RuntimeError("pruned() needs a full frame first")
            if (s.t + 1) % self.cfg.reset_period == 0:
                s.t = 0  # stay on pruned frames: the caches are those of the last frames

    def pruned(self) -> None:
        self._stay_pruned()
        if self._pruned_graph is not None:
            self._replay_pruned(self._next())
        else:
            self._rgtp_frame()

    def pruned_output(self) -> torch.Tensor:
        """An eager :meth:`pruned` frame, returning the feature map."""
        self._stay_pruned()
        return self._rgtp_frame()

    def flops(self) -> Dict[str, float]:
        out = {}
        for name, fn in (("dense", self.dense), ("full", self.full), ("pruned", self.pruned)):
            with FlopCounter() as c:
                fn()
            out[f"{name}_paper_gflops"] = c.paper.total / 1e9 / self.batch
            out[f"{name}_executed_gflops"] = c.executed.total / 1e9 / self.batch
        return out

    def cache_bytes(self) -> int:
        return self.states[0].cache_bytes()


class VivitCase:
    """ViViT-B (factorised encoder): one video = ``views`` views × 16 tubelet steps of the spatial ViT (196 tokens),
    then the temporal transformer and classifier; Kinetics schedule (reset every 8 steps with the 1in2 grid).
    """

    steps = 16

    def __init__(self, args: argparse.Namespace, keep: int) -> None:
        from rgtp.cls_vit import ClsViT

        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.cfg = RGTPConfig(
            keep_tokens=keep, reset_period=8, full_on_reset=False, reset_pattern="1in2"
        )
        torch.manual_seed(0)
        self.spatial = ClsViT((14, 14), rgtp=self.cfg).eval().to(self.device, self.dtype)
        self.temporal = ClsViT((self.steps, 1), depth=4).eval().to(self.device, self.dtype)
        self.head = torch.nn.Linear(768, 400).to(self.device, self.dtype)
        g = torch.Generator().manual_seed(0)
        self.emb = torch.randn(self.steps, args.views, 196, 768, generator=g).to(
            self.device, self.dtype
        )
        self.batch = args.views
        self.step_times: Dict[str, List[float]] = {
            "full": [],
            "reset": [],
            "pruned": [],
            "dense": [],
        }

    def _video(self, state, record: bool) -> None:
        feats = []
        for t in range(self.steps):
            t0 = time.perf_counter()
            feats.append(self.spatial(self.emb[t], state))
            if record:
                kind = (
                    "dense"
                    if state is None
                    else {"first": "full"}.get(state.frame_type.value, state.frame_type.value)
                )
                self.step_times[kind].append(time.perf_counter() - t0)
        self.head(self.temporal(torch.stack(feats, dim=1)))

    def dense(self, record: bool = False) -> None:
        self._video(None, record)

    def rgtp(self, record: bool = False) -> None:
        self._video(self.spatial.new_state(), record)

    def flops(self) -> Dict[str, float]:
        out = {}
        for name, fn in (("dense", self.dense), ("rgtp", self.rgtp)):
            with FlopCounter() as c:
                fn()
            out[f"{name}_paper_tflops"] = c.paper.total / 1e12
            out[f"{name}_executed_tflops"] = c.executed.total / 1e12
        return out


def case_for(model: str):
    """The case class of ``--model``."""
    if model == "vitdet-detector":
        from .detector import VitdetDetectorCase  # imports detectron2

        return VitdetDetectorCase
    return {"vitdet-backbone": VitdetBackboneCase, "vivit": VivitCase}[model]


MODELS = ("vitdet-backbone", "vitdet-detector", "vivit")
