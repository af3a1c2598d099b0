"""How the benchmark times: dense and RGTP calls interleaved after warm-up (machine load affects both alike),
per-component stopwatches, and peak memory per frame type; one result row per keep setting."""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from rgtp.timing import Timing, peak_memory_bytes, reset_peak_memory, synchronize, time_calls

from . import baseline
from .capture import capture_fields, dynamo_stats
from .cases import VivitCase, case_for
from .memory import frame_peaks, release_free_memory


def interleaved(
    fns: Dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    prepare: Optional[Callable[[str], None]] = None,
) -> Dict[str, Timing]:
    """``repeats`` rounds of one timed call of each of ``fns``; ``prepare(name)`` runs untimed before each."""
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if prepare is not None:
                prepare(name)
            samples[name] += time_calls(fn, 1, device).samples
    return {k: Timing(v) for k, v in samples.items()}


def speed_fields(times: Dict[str, Timing], f: float, prefix: str = "") -> Dict[str, float]:
    """From the medians of ``times[prefix + kind]`` (dense, full, pruned): ``weighted_s`` = f·full + (1−f)·pruned
    with f the full-frame fraction, ``speedup_weighted`` and ``speedup_pruned`` over dense, named ``prefix + …``.
    """
    dense, full, pruned = (times[prefix + k].median for k in ("dense", "full", "pruned"))
    weighted = f * full + (1 - f) * pruned
    return {
        f"{prefix}weighted_s": weighted,
        f"{prefix}speedup_weighted": dense / weighted,
        f"{prefix}speedup_pruned": dense / pruned,
    }


class Stopwatch:
    """Seconds spent in named components (module forwards, methods) during the calls made while :attr:`on`; one
    component may be timed at several places (their times add up). On a GPU each boundary synchronises.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.on = False
        self.seconds: Dict[str, float] = defaultdict(float)
        self._started: Dict[str, List[float]] = defaultdict(list)

    def _start(self, name: str) -> None:
        if self.on:
            synchronize(self.device)
            self._started[name].append(time.perf_counter())

    def _stop(self, name: str) -> None:
        if self.on and self._started[name]:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - self._started[name].pop()

    def module(self, name: str, module: nn.Module) -> None:
        """Time every forward of ``module`` as ``name``."""
        module.register_forward_pre_hook(lambda m, inp: self._start(name))
        module.register_forward_hook(lambda m, inp, out: self._stop(name))

    def method(self, name: str, obj: Any, attr: str) -> None:
        """Time every call of ``obj.attr`` as ``name`` (the bound method is shadowed on the instance)."""
        fn = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._start(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stop(name)

        setattr(obj, attr, timed)

    def measure(self, fn: Callable[[], object]) -> Dict[str, float]:
        """Run ``fn`` once with the stopwatch on; its components' seconds and the ``total``."""
        self.seconds.clear()
        self.on = True
        try:
            self._start("total")
            fn()
            self._stop("total")
        finally:
            self.on = False
        return dict(self.seconds)


def run_case(args: argparse.Namespace, keep: int) -> dict:
    """Benchmark one keep setting of a per-frame model (ViTDet backbone or detector); returns one result row."""
    case = case_for(args.model)(args, keep)
    dev = case.device
    capture = capture_fields(args, dev)
    base, core = None, None
    if getattr(args, "compare_to", None):
        core = baseline.import_core(args.compare_to)
        base = baseline.BaselineBackboneCase(args, keep, core, case)
    with torch.inference_mode():
        if args.capture != "none":
            capture.update(case.use_static_path())
        flops = case.flops()
        case.full()
        t0 = time.perf_counter()
        before = dynamo_stats()
        case.prepare_capture(args)  # compilation / capture is part of the (untimed) warm-up
        for _ in range(args.warmup):
            for kind in ("dense", "pruned", "full"):
                case.prepare(kind)
                getattr(case, kind)()
        case.full()
        if args.capture != "none":
            capture.update(case.check_capture())  # once, before timing
            case.full()
        capture["warmup_s"] = time.perf_counter() - t0
        warm = dynamo_stats()
        fns = {"dense": case.dense, "pruned": case.pruned, "full": case.full}
        if base is not None:
            diff = baseline.warm_up_and_compare(case, base, args.warmup)
            fns = baseline.interleaved_fns(case, base)
        # dense, pruned and full frames interleaved: load changes affect every ratio alike
        times = interleaved(fns, args.repeats, dev, case.prepare)
        base = fns = None  # the other revision's model is not part of the memory peaks
        if args.capture == "compile":
            after = dynamo_stats()
            capture["compiled_graphs"] = warm["graphs"] - before["graphs"]
            capture["graph_breaks"] = warm["graph_breaks"] - before["graph_breaks"]
            capture["cudagraph_skips"] = after["cudagraph_skips"] - before["cudagraph_skips"]
            capture["recompiles_while_timing"] = after["graphs"] - warm["graphs"]
        components = case.components(args.repeats) if hasattr(case, "components") else {}
        memory = frame_peaks(case, dev)
        extra = case.row_fields() if hasattr(case, "row_fields") else {}
    f = case.full_fraction
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
        **speed_fields(times, f),
        "flop_ratio_weighted": flops["dense_paper_gflops"] / weighted_flops,
        "flop_ratio_pruned": flops["dense_paper_gflops"] / flops["pruned_paper_gflops"],
        **flops,
        "cache_mb_per_stream": case.cache_bytes() / 2**20,
        **memory,
        "peak_rgtp_mb": memory["peak_pruned_mb"],
        **components,
        **extra,
        **capture,
    }
    if "pruned_head_executed_gflops" in flops:  # the detector: backbone and head as executed
        whole = {
            k: flops[f"{k}_executed_gflops"] + flops[f"{k}_head_executed_gflops"]
            for k in ("dense", "full", "pruned")
        }
        row["flop_ratio_weighted_whole"] = whole["dense"] / (
            f * whole["full"] + (1 - f) * whole["pruned"]
        )
        row["flop_ratio_pruned_whole"] = whole["dense"] / whole["pruned"]
    if core is not None:
        row.update(speed_fields(times, f, "baseline_"))
        row.update(baseline.baseline_fields(args.compare_to, core, times, diff))
    row["peak_ratio"] = row["peak_rgtp_mb"] / row["peak_dense_mb"]
    row["peak_reset_ratio"] = row["peak_reset_mb"] / row["peak_dense_mb"]
    return row


def run_video_case(args: argparse.Namespace, keep: int) -> dict:
    """Benchmark a per-video model (ViViT): dense and RGTP videos interleaved."""
    case = VivitCase(args, keep)
    dev = case.device
    with torch.inference_mode():
        flops = case.flops()
        for _ in range(args.warmup):
            case.dense()
            case.rgtp()
        times = interleaved(
            {"dense": lambda: case.dense(True), "rgtp": lambda: case.rgtp(True)}, args.repeats, dev
        )
        memory = {}
        for name, fn in (("dense", case.dense), ("rgtp", case.rgtp)):
            release_free_memory()
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
