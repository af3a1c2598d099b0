"""Wall-clock measurement helpers for benchmarks: synchronised timers, statistics and peak memory.

Used by ``tools/benchmark.py``; never by tests (speed is measured in benchmarks, not asserted in tests). Also the
benchmark's capture helpers: ``torch.compile`` settings and CUDA graph capture of a static per-frame step.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch


@dataclass
class Timing:
    """Seconds per call over repeated runs."""

    samples: List[float]

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        """90th-percentile seconds per call."""
        s = sorted(self.samples)
        return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], repeats: int, device: torch.device) -> Timing:
    """Time ``repeats`` calls of ``fn`` (CUDA events on a GPU, ``perf_counter`` on the CPU)."""
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return Timing(samples)


def reset_peak_memory(device: torch.device) -> None:
    """Reset the peak-memory counter: CUDA max allocated, or the process's peak RSS (Linux ``clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since the last reset: CUDA max allocated, or peak RSS (VmHWM) of this process."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ------------------------------------------------------------------------------------------------ capture
CAPTURE_MODES = ("none", "compile", "cudagraph")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_kwargs(device: torch.device, backend: str = "inductor", mode: str = "auto") -> dict:
    """Keyword arguments of ``torch.compile`` for the benchmark's ``--capture compile``.

    ``mode`` ``auto`` resolves to ``reduce-overhead`` (inductor with CUDA graphs) on a GPU and to inductor's default
    on the CPU. A mode is only passed to the ``inductor`` backend (``eager`` / ``aot_eager`` take none).
    Always ``fullgraph=False``: the stream state is Python data, so graph breaks are allowed (and counted).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}: allowed {COMPILE_MODES}")
    kwargs: dict = {"backend": backend, "fullgraph": False}
    if backend == "inductor":
        if mode == "auto":
            mode = "reduce-overhead" if device.type == "cuda" else "default"
        kwargs["mode"] = mode
    elif mode not in ("auto", "default"):
        raise ValueError(f"compile mode {mode!r} needs the inductor backend, not {backend!r}")
    return kwargs


def capture_cuda_graph(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 2,
    before_capture: Optional[Callable[[], None]] = None,
    what: str = "the callable",
) -> "torch.cuda.CUDAGraph":
    """Capture ``fn`` (which reads and writes only tensors at fixed addresses) into a CUDA graph.

    ``fn`` runs ``warmup`` times on a side stream first (as CUDA graph capture requires: lazy allocations, cuDNN /
    cuBLAS workspaces), then ``before_capture()`` (e.g. to fix the static input buffers), then once under capture.
    Replaying the returned graph repeats the captured kernels on whatever the captured buffers hold.

    Raises:
        ValueError: not a CUDA device.
        RuntimeError: ``fn`` is not capturable (a host synchronisation such as ``.item()``, ``nonzero``, a boolean
            mask index or a CPU↔GPU copy), with the original CUDA error attached.
    """
    if device.type != "cuda":
        raise ValueError(f"CUDA graph capture needs a CUDA device, got {device}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    if before_capture is not None:
        before_capture()
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as e:
        raise RuntimeError(
            f"capturing {what} into a CUDA graph failed: it is not static (it synchronises with the host, e.g. "
            f".item(), nonzero(), boolean-mask indexing or a CPU<->GPU copy, or allocates data-dependent shapes). "
            f"Original error: {e}"
        ) from e
    torch.cuda.synchronize(device)
    return graph


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| in float64 (``inf`` when the shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())
