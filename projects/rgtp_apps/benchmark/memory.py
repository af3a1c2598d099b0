"""Peak memory per frame type (dense, full, pruned, reset).

``peak_<kind>_mb`` is tensor memory, the same notion on both devices: on a GPU ``torch.cuda.max_memory_allocated``
over the frame; on the CPU the bytes of every tensor storage alive before the frames (the models, reusable
buffers; found through the garbage collector) plus the running net allocation of the frames (the profiler's memory
events, from before the streams' caches exist, so that their frees count), at its highest during the frame. Neither
depends on what the C allocator keeps back. On the CPU the process's resident
set is reported too (``rss_peak_<kind>_mb``, after ``malloc_trim``): what the machine sees, allocator included.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import Any, Dict

import torch

from rgtp.timing import peak_memory_bytes, reset_peak_memory

FRAME_KINDS = ("dense", "full", "pruned", "reset")


def release_free_memory() -> None:
    """Collect garbage and, on Linux, hand the C allocator's free memory back to the system (``malloc_trim``)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def live_tensor_bytes() -> int:
    """Bytes of the distinct CPU tensor storages reachable from Python objects now."""
    seen: Dict[int, int] = {}
    for obj in gc.get_objects():
        if type(obj) not in (torch.Tensor, torch.nn.Parameter) or obj.device.type != "cpu":
            continue  # fake, functional or other tensor subclasses (e.g. left by torch.compile) have no memory
        try:
            st = obj.untyped_storage()
            ptr, n = st.data_ptr(), st.nbytes()
        except Exception:  # noqa: BLE001 - a storage without data
            continue
        seen[ptr] = max(seen.get(ptr, 0), n)
    return sum(seen.values())


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set now (``VmRSS``) or its high-water mark (``VmHWM``); 0 where unknown."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def frame_peaks(case: Any, device: torch.device) -> Dict[str, float]:
    """Peak memory in MB of one frame of each kind, in this order: ``dense`` (the RGTP streams released first: a
    dense model holds none), ``full`` (a first frame), ``pruned`` (the frame after it) and ``reset`` (a periodic
    reset: the stream's caches exist when it starts; the pruned frames before it run untimed)."""
    out: Dict[str, float] = {}
    mb = 2.0**20
    case.release_streams()
    if device.type == "cuda":
        for kind in FRAME_KINDS:
            case.prepare(kind)
            out[f"live_before_{kind}_mb"] = torch.cuda.memory_allocated(device) / mb
            reset_peak_memory(device)
            getattr(case, kind)()
            out[f"peak_{kind}_mb"] = peak_memory_bytes(device) / mb
        return out
    from torch.profiler import ProfilerActivity, profile, record_function

    release_free_memory()
    base = live_tensor_bytes()
    # one profile over every frame, so that the frees of the caches the frames allocate are counted too
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for kind in FRAME_KINDS:
            case.prepare(kind)
            release_free_memory()
            out[f"rss_before_{kind}_mb"] = rss_bytes() / mb
            reset_peak_memory(device)
            with record_function(f"{_MARK}{kind}"):
                getattr(case, kind)()
            out[f"rss_peak_{kind}_mb"] = peak_memory_bytes(device) / mb
    events = prof.profiler.kineto_results.events()
    marks = {
        e.name()[len(_MARK) :]: (e.start_ns(), e.start_ns() + e.duration_ns())
        for e in events
        if e.name().startswith(_MARK)
    }
    mem = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    for kind, (start, end) in marks.items():
        live = base + sum(n for t, n in mem if t < start)
        peak = live
        for t, n in mem:
            if start <= t <= end:
                live += n
                peak = max(peak, live)
        out[f"live_before_{kind}_mb"] = (base + sum(n for t, n in mem if t < start)) / mb
        out[f"peak_{kind}_mb"] = peak / mb
    return out


_MARK = "rgtp_benchmark_frame::"
