#!/usr/bin/env python
"""Wall-clock benchmark of RGTP against the dense model, measured in the same run.

For each model and keep setting it times, after warm-up and with dense and pruned calls interleaved (so that machine
load affects both alike):

* ``dense``: the plain model on one frame;
* ``full``: an RGTP full frame (first or reset; every token, caches refilled, rollout computed);
* ``pruned``: an RGTP pruned frame (tracking, selection, kept tokens only, rollout);
* the frame-weighted average f·full + (1−f)·pruned with f the full-frame fraction of the schedule
  (ImageNet VID val: 0.12654, method.md §5.2; ViViT: the tubelet schedule of the config),

and reports median and p90 seconds, speed-ups over dense, FLOPs (paper convention and executed), per-stream cache
memory, peak memory of each phase, threads, dtype and batch of streams, as JSON and as a Markdown table.

Examples::

    python tools/benchmark.py --model vitdet-backbone --size 672 --keep 512 196
    python tools/benchmark.py --model vitdet-backbone --size 1024 --keep 750 --rollout backward
    python tools/benchmark.py --model vitdet-detector --size 672 --keep 512
    python tools/benchmark.py --model vivit --keep 96 --views 12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from rgtp.config import RGTPConfig
from rgtp.counting import FlopCounter
from rgtp.selection import FrameType
from rgtp.state import StreamState
from rgtp.timing import (
    CAPTURE_MODES,
    COMPILE_MODES,
    Timing,
    capture_cuda_graph,
    compile_kwargs,
    max_abs_diff,
    peak_memory_bytes,
    reset_peak_memory,
    time_calls,
)
from rgtp.vit import PrunedViT

LOG = logging.getLogger("rgtp.benchmark")
VID_FULL_FRACTION = 0.12654  # method.md §5.2: fraction of full frames in ImageNet VID val


def _dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _tolerance(dtype: torch.dtype) -> Tuple[float, float]:
    """(rtol, atol) of the eager-vs-captured check: kernel fusion reorders floating-point sums."""
    return (1e-3, 1e-4) if dtype == torch.float32 else (2e-2, 2e-2)


def _dynamo_stats() -> Dict[str, int]:
    """Compiled graphs, graph breaks and graphs inductor ran without CUDA graphs (``reduce-overhead`` skips a graph
    that, e.g., mutates an input it does not manage) so far in this process (Dynamo's counters)."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }


_STATE_TENSORS = ("heatmap", "embed", "output", "kept")
_STATE_DICTS = ("qkv", "attn")


def _state_slots(s: StreamState) -> Dict[tuple, torch.Tensor]:
    """The tensors a stream carries to its next frame, by slot (``("output",)``, ``("qkv", 3)``, …)."""
    slots: Dict[tuple, torch.Tensor] = {}
    for name in _STATE_TENSORS:
        t = getattr(s, name)
        if t is not None:
            slots[(name,)] = t
    for name in _STATE_DICTS:
        for k, t in getattr(s, name).items():
            slots[(name, k)] = t
    return slots


def _set_slot(s: StreamState, slot: tuple, t: torch.Tensor) -> None:
    if len(slot) == 1:
        setattr(s, slot[0], t)
    else:
        getattr(s, slot[0])[slot[1]] = t


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` view the same elements (no host synchronisation: usable under capture)."""
    return a is b or (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
    )


def _clone_states(states: List[StreamState]) -> List[StreamState]:
    """Independent copies of ``states`` (tensors cloned), for the eager reference of the capture check."""
    out = []
    for s in states:
        c = StreamState(t=s.t, frame_type=s.frame_type, grid=s.grid)
        for slot, t in _state_slots(s).items():
            _set_slot(c, slot, t.clone())
        c.pending = {k: v.clone() for k, v in s.pending.items()}
        out.append(c)
    return out


class VitdetBackboneCase:
    """ViTDet-B backbone (+ rollout) on a batch of ``batch`` streams at ``size``×``size``."""

    def __init__(self, args: argparse.Namespace, keep: int) -> None:
        self.device = torch.device(args.device)
        self.dtype = _dtype(args.dtype)
        self.size = args.size
        self.grid = args.size // 16
        pool = 2 if args.rollout == "forward" else 1
        self.cfg = RGTPConfig(keep_tokens=keep, rollout_mode=args.rollout, rollout_pool=pool)
        torch.manual_seed(0)
        self.model = PrunedViT(img_size=1024, rel_pos_size=64, rgtp=self.cfg).eval()
        self.model.to(self.device, self.dtype)
        g = torch.Generator().manual_seed(0)
        base = torch.randn(args.batch, 3, args.size + 16, args.size + 16, generator=g)
        # a slowly panning frame sequence
        self.frames = [
            base[:, :, i % 16 : i % 16 + args.size, : args.size]
            .to(self.device, self.dtype)
            .contiguous()
            for i in range(16)
        ]
        self.batch = args.batch
        self.states = [StreamState() for _ in range(args.batch)]
        self.i = 0
        self.full_fraction = VID_FULL_FRACTION
        self._anchors = torch.zeros(
            args.batch, self.grid, self.grid, dtype=torch.bool, device=self.device
        )
        self.capture = "none"
        self._update: Callable[..., torch.Tensor] = self.model.update_heatmap
        self._dense_graph: Optional["torch.cuda.CUDAGraph"] = None
        self._pruned_graph: Optional["torch.cuda.CUDAGraph"] = None
        self._static: Optional[List[Dict[tuple, torch.Tensor]]] = None

    def _next(self) -> torch.Tensor:
        self.i += 1
        return self.frames[self.i % len(self.frames)]

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
        for s in self.states:
            s.reset()
        self._rgtp_frame()

    def pruned(self) -> None:
        for s in self.states:
            if s.t < 0:
                raise RuntimeError("pruned() needs a full frame first")
            if (s.t + 1) % self.cfg.reset_period == 0:
                s.t = 0  # stay on pruned frames: the caches are those of the last frames
        if self._pruned_graph is not None:
            self._replay_pruned(self._next())
        else:
            self._rgtp_frame()

    # ------------------------------------------------------------------------------------------------ capture
    def use_static_path(self) -> Dict[str, Any]:
        """Switch the model to its static pruned path for capture (before FLOPs are counted, so that the executed
        FLOPs are those of the timed path): the windowed blocks' kept-queries-only attention
        (``window_kept_only``, on by default except on CUDA) groups queries by window with a host read, which CUDA
        graphs cannot capture and which breaks the compiled graph inside the block loop; the static path computes
        every window and keeps the kept rows. Returns the row fields that record it."""
        self._has_switch = hasattr(self.model, "window_kept_only")
        self._eager_window_kept_only = getattr(self.model, "window_kept_only", None)
        if self._has_switch:
            self.model.window_kept_only = False
        return {"window_kept_only": getattr(self.model, "window_kept_only", None)}

    def prepare_capture(self, args: argparse.Namespace) -> None:
        """Set up ``--capture``: compile the model's forward and rollout update in place, or capture the dense and
        the pruned frame into CUDA graphs. Compilation itself happens lazily in the warm-up that follows; CUDA graph
        capture happens here. Full frames stay eager under ``cudagraph``. Call after :meth:`full`.
        """
        self.capture = args.capture
        if args.capture == "none":
            return
        if args.capture == "compile":
            kwargs = compile_kwargs(self.device, args.compile_backend, args.compile_mode)
            self.model.compile(**kwargs)
            self._update = torch.compile(self.model.update_heatmap, **kwargs)
            # the recompilations a stream needs (dense; first frame; pruned after full; pruned after pruned)
            for _ in range(2):
                self.dense()
                self.full()
                for _ in range(3):
                    self.pruned()
            return
        self._static_dense_x = self.frames[0].clone()
        self._dense_graph = capture_cuda_graph(
            lambda: self.model(self._static_dense_x), self.device, what="the dense frame"
        )
        self._static_x = self.frames[0].clone()
        self.pruned()  # leave the streams after an eager pruned frame: the slots the pruned graph reads
        for s in self.states:
            s.t = 0  # the captured frame (and the warm-up before it) is pruned
        self._pruned_graph = capture_cuda_graph(
            self._pruned_step,
            self.device,
            before_capture=self._fix_static_state,
            what="the pruned frame (backbone + rollout update)",
        )
        for s in self.states:
            s.t = 0

    def _fix_static_state(self) -> None:
        """Make the current stream tensors the pruned graph's static input/output buffers."""
        self._static = [_state_slots(s) for s in self.states]

    def _pruned_step(self) -> None:
        """The captured pruned frame: a frame on ``_static_x``, then the new stream tensors are copied into the
        static buffers (so the next replay reads them) and the streams point at those buffers again.
        """
        self._rgtp_frame(self._static_x)
        if self._static is None:
            return
        for s, static in zip(self.states, self._static):
            slots = _state_slots(s)
            if slots.keys() != static.keys():
                raise RuntimeError(
                    f"the pruned frame changed the stream state's tensors from {sorted(static)} to {sorted(slots)}"
                )
            for slot, buf in static.items():
                if not _same_memory(slots[slot], buf):  # the QKV caches are updated in place
                    buf.copy_(slots[slot])
                _set_slot(s, slot, buf)

    def _replay_pruned(self, x: torch.Tensor) -> None:
        """Replay the pruned-frame graph on frame ``x``; streams changed by eager frames (a full frame) are first
        copied into the static buffers."""
        assert self._pruned_graph is not None and self._static is not None
        for s, static in zip(self.states, self._static):
            slots = _state_slots(s)
            for slot, buf in static.items():
                cur = slots.get(slot)
                if cur is not None and not _same_memory(cur, buf):
                    buf.copy_(cur)
                _set_slot(s, slot, buf)
            s.pending = {}
        self._static_x.copy_(x)
        self._pruned_graph.replay()
        for s in self.states:
            s.t += 1
            s.frame_type = FrameType.PRUNED

    def check_capture(self) -> Dict[str, Any]:
        """Run one pruned frame captured/compiled and eager from identical stream states on the same frame; return
        the max abs differences of the feature map and heatmap and whether they are allclose (raises if not).
        """
        x = self.frames[3]
        for s in self.states:  # as pruned() does
            if (s.t + 1) % self.cfg.reset_period == 0:
                s.t = 0
        ref_states = _clone_states(self.states)
        if self._pruned_graph is not None:
            self._replay_pruned(x)
            got = torch.stack([s.output for s in self.states]).clone()
        else:
            got = self._rgtp_frame(x).flatten(2).transpose(1, 2).clone()
        got_heat = torch.stack([s.heatmap for s in self.states]).clone()
        switch = getattr(self, "_has_switch", False)
        static = getattr(self.model, "window_kept_only", None)
        if switch:  # the reference is the model's default eager path
            self.model.window_kept_only = self._eager_window_kept_only
        try:
            with torch.compiler.set_stance("force_eager"):
                ref = self.model.forward(x, ref_states)
                self.model.update_heatmap(ref_states, self._anchors)
        finally:
            if switch:
                self.model.window_kept_only = static
        ref = next(iter(ref.values())).flatten(2).transpose(1, 2)
        ref_heat = torch.stack([s.heatmap for s in ref_states])
        return _check_result(
            {"output": (got, ref), "heatmap": (got_heat, ref_heat)},
            _tolerance(self.dtype),
            kept_equal=all(
                bool(torch.equal(a.kept, b.kept))
                for a, b in zip(self.states, ref_states)
                if a.kept is not None and b.kept is not None
            ),
        )

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


def _check_result(
    pairs: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
    tol: Tuple[float, float],
    kept_equal: Optional[bool] = None,
) -> Dict[str, Any]:
    """The capture check's JSON fields from (captured, eager) pairs; raises if any pair is not allclose."""
    rtol, atol = tol
    out: Dict[str, Any] = {}
    ok = True
    for name, (got, ref) in pairs.items():
        out[f"capture_max_abs_diff_{name}"] = max_abs_diff(got, ref)
        ok = ok and got.shape == ref.shape and torch.allclose(got.float(), ref.float(), rtol, atol)
    out["capture_max_abs_diff"] = max(v for k, v in out.items())
    if kept_equal is not None:
        out["capture_kept_equal"] = kept_equal
    out["capture_check"] = ok
    out["capture_check_tolerance"] = {"rtol": rtol, "atol": atol}
    if not ok:
        raise RuntimeError(f"captured/compiled outputs differ from eager ones: {out}")
    return out


class VivitCase:
    """ViViT-B (factorised encoder): one video = ``views`` views × 16 tubelet steps of the spatial ViT (196 tokens),
    then the temporal transformer and classifier; Kinetics schedule (reset every 8 steps with the 1in2 grid).
    """

    steps = 16

    def __init__(self, args: argparse.Namespace, keep: int) -> None:
        from rgtp.cls_vit import ClsViT

        self.device = torch.device(args.device)
        self.dtype = _dtype(args.dtype)
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


def run_video_case(args: argparse.Namespace, keep: int) -> dict:
    """Benchmark a per-video model (ViViT): dense and RGTP videos interleaved."""
    case = VivitCase(args, keep)
    dev = case.device
    with torch.inference_mode():
        flops = case.flops()
        for _ in range(args.warmup):
            case.dense()
            case.rgtp()
        times = _interleaved(
            {"dense": lambda: case.dense(True), "rgtp": lambda: case.rgtp(True)}, args.repeats, dev
        )
        memory = {}
        for name, fn in (("dense", case.dense), ("rgtp", case.rgtp)):
            reset_peak_memory(dev)
            fn()
            memory[f"peak_{name}_mb"] = peak_memory_bytes(dev) / 2**20
    steps = {f"step_{k}_median_s": statistics.median(v) for k, v in case.step_times.items() if v}
    return {
        "model": args.model,
        "keep": keep,
        "views": args.views,
        "dtype": args.dtype,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "dense_video_median_s": times["dense"].median,
        "dense_video_p90_s": times["dense"].p90,
        "rgtp_video_median_s": times["rgtp"].median,
        "rgtp_video_p90_s": times["rgtp"].p90,
        "speedup_video": times["dense"].median / times["rgtp"].median,
        "flop_ratio_video": flops["dense_paper_tflops"] / flops["rgtp_paper_tflops"],
        **steps,
        **flops,
        **memory,
    }


def markdown_video(rows: List[dict]) -> str:
    """Markdown table for per-video (ViViT) rows."""
    lines = [
        "| model | keep | views | dtype | threads | dense s/video (p90) | RGTP s/video (p90) | speed-up (FLOP ratio) "
        "| step ms full / reset / pruned / dense | peak MB dense / RGTP |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        steps = " / ".join(
            f"{1e3 * r.get(f'step_{k}_median_s', float('nan')):.0f}"
            for k in ("full", "reset", "pruned", "dense")
        )
        lines.append(
            f"| {r['model']} | {r['keep']} | {r['views']} | {r['dtype']} | {r['threads']} "
            f"| {r['dense_video_median_s']:.2f} ({r['dense_video_p90_s']:.2f}) "
            f"| {r['rgtp_video_median_s']:.2f} ({r['rgtp_video_p90_s']:.2f}) "
            f"| {r['speedup_video']:.2f}× ({r['flop_ratio_video']:.2f}×) | {steps} "
            f"| {r['peak_dense_mb']:.0f} / {r['peak_rgtp_mb']:.0f} |"
        )
    return "\n".join(lines)


class VitdetDetectorCase(VitdetBackboneCase):
    """The whole detector (backbone + pyramid + RPN + ROI heads + rollout), built from a ``configs/vid`` config with
    random weights, one frame per stream through ``RGTPVideoRCNN.inference``; dense = the same config with
    ``MODEL.RGTP.ENABLED False``. Frames are VID-shaped (16:9, short edge resized as §7) and padded to ``size``.
    """

    def __init__(self, args: argparse.Namespace, keep: int) -> None:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        from rgtp_vitdet import add_rgtp_config

        super().__init__(args, keep)
        base = (
            "configs/vid/keep512.yaml" if args.size == 672 else "configs/vid/res1024_keep400.yaml"
        )

        def build(enabled: bool) -> torch.nn.Module:
            cfg = get_cfg()
            add_rgtp_config(cfg)
            cfg.merge_from_file(base)
            cfg.merge_from_list(
                [
                    "MODEL.WEIGHTS",
                    "",
                    "MODEL.DEVICE",
                    args.device,
                    "MODEL.VIT.ATTENTION",
                    "sdpa",
                    "MODEL.RGTP.ENABLED",
                    enabled,
                    "MODEL.RGTP.KEEP_RATIO",
                    keep / self.grid**2,
                ]
            )
            torch.manual_seed(0)
            return build_model(cfg).eval().to(dtype=self.dtype)

        self.detector = build(True)
        self.dense_detector = build(False)
        self.dense_detector.load_state_dict(self.detector.state_dict())
        h = args.size * 9 // 16
        g = torch.Generator().manual_seed(1)
        base_img = torch.randint(0, 256, (3, h + 16, args.size + 16), generator=g).float()
        self.images = [base_img[:, i : i + h, i : i + args.size].contiguous() for i in range(16)]
        self.t = [0] * self.batch
        self.video = [0] * self.batch

    def _inputs(self, reset: bool) -> list:
        inputs = []
        for b in range(self.batch):
            if reset:
                self.video[b] += 1
                self.t[b] = 0
            elif (self.t[b] + 1) % self.cfg.reset_period == 0:
                self.video[
                    b
                ] += 1  # start a fresh video so that pruned frames follow its first frame
                self.t[b] = 0
                self._first([b])
            else:
                self.t[b] += 1
            img = self.images[(self.t[b] + b) % len(self.images)]
            inputs.append(
                {
                    "image": img,
                    "height": img.shape[1],
                    "width": img.shape[2],
                    "video_id": f"s{b}v{self.video[b]}",
                    "frame_index": self.t[b],
                }
            )
        return inputs

    def _first(self, streams: list) -> None:
        inputs = []
        for b in streams:
            img = self.images[b % len(self.images)]
            inputs.append(
                {
                    "image": img,
                    "height": img.shape[1],
                    "width": img.shape[2],
                    "video_id": f"s{b}v{self.video[b]}",
                    "frame_index": 0,
                }
            )
        self.detector(inputs)

    def dense(self) -> list:
        img = self.images[0]
        inputs = [
            {"image": img, "height": img.shape[1], "width": img.shape[2], "video_id": f"d{b}"}
            for b in range(self.batch)
        ]
        return self.dense_detector(inputs)

    def full(self) -> list:
        return self.detector(self._inputs(reset=True))

    def pruned(self) -> list:
        return self.detector(self._inputs(reset=False))

    def flops(self) -> Dict[str, float]:
        """Backbone FLOPs per frame as the meta-architecture reports them (it counts with its own FlopCounter)."""
        out = {}
        for name, fn in (("dense", self.dense), ("full", self.full), ("pruned", self.pruned)):
            stats = fn()[0]["rgtp"]
            out[f"{name}_paper_gflops"] = stats["gflops_paper"]
            out[f"{name}_executed_gflops"] = stats["gflops_executed"]
        return out

    def cache_bytes(self) -> int:
        states = list(self.detector._states.values())
        return states[-1].cache_bytes() if states else 0


CASES = {
    "vitdet-backbone": VitdetBackboneCase,
    "vitdet-detector": VitdetDetectorCase,
    "vivit": VivitCase,
}


def _interleaved(
    fns: Dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> Dict[str, Timing]:
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name] += time_calls(fn, 1, device).samples
    return {k: Timing(v) for k, v in samples.items()}


def _capture_fields(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """The row fields that say how the timed callables ran (eager, compiled, CUDA graphs)."""
    fields: Dict[str, Any] = {"capture": args.capture}
    if args.capture == "compile":
        kwargs = compile_kwargs(device, args.compile_backend, args.compile_mode)
        fields["compile_backend"] = kwargs["backend"]
        fields["compile_mode"] = kwargs.get("mode", "default")
    return fields


def _capture_label(r: dict) -> str:
    capture = r.get("capture", "none")
    if capture == "compile":
        return f"compile ({r['compile_backend']}, {r['compile_mode']})"
    return capture


def run_case(args: argparse.Namespace, keep: int) -> dict:
    """Benchmark one keep setting; returns one result row."""
    case = CASES[args.model](args, keep)
    dev = case.device
    capture = _capture_fields(args, dev)
    with torch.inference_mode():
        if args.capture != "none":
            capture.update(case.use_static_path())
        flops = case.flops()
        case.full()
        t0 = time.perf_counter()
        before = _dynamo_stats()
        case.prepare_capture(args)  # compilation / capture is part of the (untimed) warm-up
        for _ in range(args.warmup):
            case.dense()
            case.pruned()
            case.full()
        case.full()
        if args.capture != "none":
            capture.update(case.check_capture())  # once, before timing
            case.full()
        capture["warmup_s"] = time.perf_counter() - t0
        warm = _dynamo_stats()
        # leave the stream after a full frame so pruned frames follow
        times = _interleaved({"dense": case.dense, "pruned": case.pruned}, args.repeats, dev)
        times["full"] = _interleaved({"full": case.full}, max(2, args.repeats // 2), dev)["full"]
        if args.capture == "compile":
            after = _dynamo_stats()
            capture["compiled_graphs"] = warm["graphs"] - before["graphs"]
            capture["graph_breaks"] = warm["graph_breaks"] - before["graph_breaks"]
            capture["cudagraph_skips"] = after["cudagraph_skips"] - before["cudagraph_skips"]
            capture["recompiles_while_timing"] = after["graphs"] - warm["graphs"]
        memory = {}
        for name, fn in (("dense", case.dense), ("rgtp", case.pruned)):
            if name == "rgtp":
                case.full()
            reset_peak_memory(dev)
            for _ in range(2):
                fn()
            memory[f"peak_{name}_mb"] = peak_memory_bytes(dev) / 2**20
    f = case.full_fraction
    weighted = f * times["full"].median + (1 - f) * times["pruned"].median
    dense = times["dense"].median
    weighted_flops = f * flops["full_paper_gflops"] + (1 - f) * flops["pruned_paper_gflops"]
    row = {
        "model": args.model,
        "keep": keep,
        "size": args.size,
        "batch": args.batch,
        "dtype": args.dtype,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "full_fraction": f,
        **{f"{k}_median_s": v.median for k, v in times.items()},
        **{f"{k}_p90_s": v.p90 for k, v in times.items()},
        "weighted_s": weighted,
        "speedup_weighted": dense / weighted,
        "speedup_pruned": dense / times["pruned"].median,
        "flop_ratio_weighted": flops["dense_paper_gflops"] / weighted_flops,
        "flop_ratio_pruned": flops["dense_paper_gflops"] / flops["pruned_paper_gflops"],
        **flops,
        "cache_mb_per_stream": case.cache_bytes() / 2**20,
        **memory,
        **capture,
    }
    row["peak_ratio"] = row["peak_rgtp_mb"] / row["peak_dense_mb"]
    return row


def markdown(rows: List[dict]) -> str:
    """The Markdown table of the README's Speed section."""
    head = (
        "| model | size | keep | batch | dtype | threads | dense ms | full ms | pruned ms (p90) | weighted ms "
        "| speed-up weighted (FLOP ratio) | speed-up pruned (FLOP ratio) | cache MB/stream | peak MB dense / RGTP "
        "| capture |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['keep']} | {r['batch']} | {r['dtype']} | {r['threads']} "
            f"| {1e3 * r['dense_median_s']:.0f} | {1e3 * r['full_median_s']:.0f} "
            f"| {1e3 * r['pruned_median_s']:.0f} ({1e3 * r['pruned_p90_s']:.0f}) | {1e3 * r['weighted_s']:.0f} "
            f"| {r['speedup_weighted']:.2f}× ({r['flop_ratio_weighted']:.2f}×) "
            f"| {r['speedup_pruned']:.2f}× ({r['flop_ratio_pruned']:.2f}×) "
            f"| {r['cache_mb_per_stream']:.0f} | {r['peak_dense_mb']:.0f} / {r['peak_rgtp_mb']:.0f} "
            f"| {_capture_label(r)} |"
        )
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> List[dict]:
    """Parse arguments, run every keep setting, write JSON + Markdown, print the table."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=sorted(CASES), default="vitdet-backbone")
    p.add_argument("--size", type=int, default=672, help="padded input side (672 or 1024)")
    p.add_argument(
        "--keep", type=int, nargs="+", default=[512], help="kept tokens K on pruned frames"
    )
    p.add_argument(
        "--rollout",
        choices=["forward", "backward"],
        default=None,
        help="default: pooled forward at 672, backward at 1024 (the paper's settings)",
    )
    p.add_argument("--batch", type=int, default=1, help="streams processed side by side")
    p.add_argument("--views", type=int, default=12, help="ViViT views per video, batched")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    p.add_argument(
        "--capture",
        choices=CAPTURE_MODES,
        default="none",
        help="how the timed frames run: eager (none); torch.compile of the model forward and rollout update "
        "(compile; fullgraph=False); or the dense and pruned frames captured as CUDA graphs (cudagraph, CUDA "
        "only; full frames stay eager). Both use the static pruned path (window_kept_only off), include the "
        "compilation/capture in the untimed warm-up and check once that the pruned frame matches eager",
    )
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend for --capture compile (inductor; aot_eager or eager without a C++ compiler)",
    )
    p.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="auto",
        help="inductor mode; auto: reduce-overhead (CUDA graphs) on a GPU, default on the CPU",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--out", default="output/benchmark", help="folder for benchmark.json and benchmark.md"
    )
    args = p.parse_args(argv)
    if args.rollout is None:
        args.rollout = "forward" if args.size == 672 else "backward"
    if args.capture != "none" and args.model != "vitdet-backbone":
        p.error(f"--capture {args.capture} is implemented for --model vitdet-backbone only")
    if args.capture == "cudagraph" and torch.device(args.device).type != "cuda":
        p.error(
            f"--capture cudagraph needs a CUDA device (got --device {args.device}); "
            f"use --capture compile on the CPU"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for keep in args.keep:
        LOG.info(
            "benchmarking %s size=%d keep=%d batch=%d %s",
            args.model,
            args.size,
            keep,
            args.batch,
            args.dtype,
        )
        rows.append(run_video_case(args, keep) if args.model == "vivit" else run_case(args, keep))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "device_name": (
            torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
        ),
    }
    tmp = out / "benchmark.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    tmp.replace(out / "benchmark.json")
    table = markdown_video(rows) if args.model == "vivit" else markdown(rows)
    (out / "benchmark.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
