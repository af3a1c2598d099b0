"""``--capture compile|cudagraph`` of the backbone case: the static pruned frame, CUDA graph replay with fixed
stream buffers, and the once-before-timing check that captured frames equal eager ones."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from rgtp.selection import FrameType
from rgtp.state import StreamState
from rgtp.timing import capture_cuda_graph, compile_kwargs, max_abs_diff

_STATE_TENSORS = ("heatmap", "embed", "output", "kept")
_STATE_DICTS = ("qkv", "attn")


def tolerance(dtype: torch.dtype) -> Tuple[float, float]:
    """(rtol, atol) of the eager-vs-captured check: kernel fusion reorders floating-point sums."""
    return (1e-3, 1e-4) if dtype == torch.float32 else (2e-2, 2e-2)


def dynamo_stats() -> Dict[str, int]:
    """Compiled graphs, graph breaks and graphs inductor ran without CUDA graphs (``reduce-overhead`` skips a graph
    that, e.g., mutates an input it does not manage) so far in this process (Dynamo's counters)."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }


def capture_fields(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """The row fields that say how the timed callables ran (eager, compiled, CUDA graphs)."""
    fields: Dict[str, Any] = {"capture": args.capture}
    if args.capture == "compile":
        kwargs = compile_kwargs(device, args.compile_backend, args.compile_mode)
        fields["compile_backend"] = kwargs["backend"]
        fields["compile_mode"] = kwargs.get("mode", "default")
    return fields


def capture_label(r: dict) -> str:
    """The Markdown table's ``capture`` cell of a row."""
    capture = r.get("capture", "none")
    if capture == "compile":
        return f"compile ({r['compile_backend']}, {r['compile_mode']})"
    return capture


def state_slots(s: StreamState) -> Dict[tuple, torch.Tensor]:
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


def set_slot(s: StreamState, slot: tuple, t: torch.Tensor) -> None:
    """Point slot ``slot`` of ``s`` at ``t``."""
    if len(slot) == 1:
        setattr(s, slot[0], t)
    else:
        getattr(s, slot[0])[slot[1]] = t


def same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` view the same elements (no host synchronisation: usable under capture)."""
    return a is b or (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
    )


def clone_states(states: List[StreamState]) -> List[StreamState]:
    """Independent copies of ``states`` (tensors cloned), for the eager reference of the capture check."""
    out = []
    for s in states:
        c = StreamState(t=s.t, frame_type=s.frame_type, grid=s.grid)
        for slot, t in state_slots(s).items():
            set_slot(c, slot, t.clone())
        c.pending = {k: v.clone() for k, v in s.pending.items()}
        out.append(c)
    return out


def check_result(
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


class StaticCapture:
    """The capture half of :class:`rgtp_apps.benchmark.cases.VitdetBackboneCase` (needs its ``model``,
    ``states``, ``frames``, ``cfg``, ``dtype``, ``device``, ``_anchors``, ``_update``, ``_next``, ``_rgtp_frame``,
    ``dense``, ``full`` and ``pruned``)."""

    model: Any
    states: List[StreamState]
    _dense_graph: Optional["torch.cuda.CUDAGraph"]
    _pruned_graph: Optional["torch.cuda.CUDAGraph"]
    _static: Optional[List[Dict[tuple, torch.Tensor]]]
    _update: Callable[..., torch.Tensor]

    def use_static_path(self) -> Dict[str, Any]:
        """Switch the model to its static pruned path for capture (before FLOPs are counted, so that the executed
        FLOPs are those of the timed path): the windowed blocks' kept-queries-only attention (``window_kept_only``,
        on by default except on CUDA, :meth:`rgtp.vit.PrunedViT.uses_window_kept_only`) groups queries by window
        with a host read, which CUDA graphs cannot capture and which breaks the compiled graph inside the block
        loop; the static path computes every window and keeps the kept rows. Returns the row fields that record
        it."""
        self._eager_window_kept_only = self.model.window_kept_only
        self.model.window_kept_only = False
        return {"window_kept_only": self.model.uses_window_kept_only(self.device)}

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
        self._static = [state_slots(s) for s in self.states]

    def _pruned_step(self) -> None:
        """The captured pruned frame: a frame on ``_static_x``, then the new stream tensors are copied into the
        static buffers (so the next replay reads them) and the streams point at those buffers again.
        """
        self._rgtp_frame(self._static_x)
        if self._static is None:
            return
        for s, static in zip(self.states, self._static):
            slots = state_slots(s)
            if slots.keys() != static.keys():
                raise RuntimeError(
                    f"the pruned frame changed the stream state's tensors from {sorted(static)} to {sorted(slots)}"
                )
            for slot, buf in static.items():
                if not same_memory(slots[slot], buf):  # the QKV caches are updated in place
                    buf.copy_(slots[slot])
                set_slot(s, slot, buf)

    def _replay_pruned(self, x: torch.Tensor) -> None:
        """Replay the pruned-frame graph on frame ``x``; streams changed by eager frames (a full frame) are first
        copied into the static buffers."""
        assert self._pruned_graph is not None and self._static is not None
        for s, static in zip(self.states, self._static):
            slots = state_slots(s)
            for slot, buf in static.items():
                cur = slots.get(slot)
                if cur is not None and not same_memory(cur, buf):
                    buf.copy_(cur)
                set_slot(s, slot, buf)
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
        ref_states = clone_states(self.states)
        if self._pruned_graph is not None:
            self._replay_pruned(x)
            got = torch.stack([s.output for s in self.states]).clone()
        else:
            got = self._rgtp_frame(x).flatten(2).transpose(1, 2).clone()
        got_heat = torch.stack([s.heatmap for s in self.states]).clone()
        static = self.model.window_kept_only
        self.model.window_kept_only = (
            self._eager_window_kept_only
        )  # the reference: the default eager path
        try:
            with torch.compiler.set_stance("force_eager"):
                ref = self.model.forward(x, ref_states)
                self.model.update_heatmap(ref_states, self._anchors)
        finally:
            self.model.window_kept_only = static
        ref = next(iter(ref.values())).flatten(2).transpose(1, 2)
        ref_heat = torch.stack([s.heatmap for s in ref_states])
        return check_result(
            {"output": (got, ref), "heatmap": (got_heat, ref_heat)},
            tolerance(self.dtype),
            kept_equal=all(
                bool(torch.equal(a.kept, b.kept))
                for a, b in zip(self.states, ref_states)
                if a.kept is not None and b.kept is not None
            ),
        )
