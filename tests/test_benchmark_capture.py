"""``tools/benchmark.py --capture`` (:mod:`rgtp_apps.benchmark`): compiled frames match eager ones and are recorded;
CUDA graphs need CUDA.

Speed is not asserted (benchmarks measure it); these runs use a 4×4 token grid and Dynamo's ``eager`` backend, so
they need no C++ compiler and no GPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest
import torch
from rgtp_apps.benchmark import capture
from rgtp_apps.benchmark.cases import VitdetBackboneCase
from rgtp_apps.benchmark.cli import main

TINY = ["--size", "64", "--keep", "8", "--warmup", "1", "--repeats", "2", "--device", "cpu"]


def test_capture_compile_matches_eager_and_is_recorded(tmp_path: Path) -> None:
    torch._dynamo.reset()
    threads = torch.get_num_threads()
    try:
        rows = main(
            TINY + ["--capture", "compile", "--compile-backend", "eager", "--out", str(tmp_path)]
        )
    finally:
        torch._dynamo.reset()
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    assert saved == json.loads(json.dumps(rows))
    (row,) = saved
    assert row["capture"] == "compile"
    assert row["compile_backend"] == "eager" and row["compile_mode"] == "default"
    assert row["window_kept_only"] is False
    assert row["capture_check"] is True and row["capture_kept_equal"] is True
    assert 0.0 <= row["capture_max_abs_diff"] <= 1e-4
    assert row["compiled_graphs"] > 0
    assert row["recompiles_while_timing"] == 0
    assert row["pruned_median_s"] > 0 and row["warmup_s"] > 0
    assert "compile (eager, default)" in (tmp_path / "benchmark.md").read_text()


def test_capture_cudagraph_needs_cuda(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(TINY + ["--capture", "cudagraph", "--out", str(tmp_path)])
    assert "--capture cudagraph needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "benchmark.json").exists()


def test_capture_other_models_rejected(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--model", "vivit", "--capture", "compile", "--out", str(tmp_path)])
    assert "vitdet-backbone only" in capsys.readouterr().err


def test_compile_kwargs() -> None:
    from rgtp.timing import compile_kwargs

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_kwargs(cpu) == {"backend": "inductor", "fullgraph": False, "mode": "default"}
    assert compile_kwargs(cuda)["mode"] == "reduce-overhead"
    assert compile_kwargs(cuda, "aot_eager") == {"backend": "aot_eager", "fullgraph": False}
    with pytest.raises(ValueError, match="needs the inductor backend"):
        compile_kwargs(cpu, "eager", "reduce-overhead")


def test_capture_cuda_graph_rejects_cpu() -> None:
    from rgtp.timing import capture_cuda_graph

    with pytest.raises(ValueError, match="needs a CUDA device"):
        capture_cuda_graph(lambda: None, torch.device("cpu"))


class _EagerGraph:
    """Stands in for a captured CUDA graph on the CPU: ``replay()`` reruns the captured step eagerly, leaving the
    Python stream counters as a real replay (which runs no Python) would."""

    def __init__(self, fn: Callable[[], object], case: Any) -> None:
        self.fn, self.case, self.replays = fn, case, 0

    def replay(self) -> None:
        states = getattr(self.case, "states", [])
        ts = [s.t for s in states]
        self.fn()
        for s, t in zip(states, ts):
            s.t = t
        self.replays += 1


def test_cudagraph_static_state_bookkeeping_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pruned graph reads and writes fixed stream buffers: emulated replays (with eager full frames in between,
    as the benchmark interleaves them) give the eager outputs, and the streams keep pointing at the buffers.
    """
    graphs: List[_EagerGraph] = []

    def fake_capture(
        fn: Callable[[], object],
        device: torch.device,
        warmup: int = 2,
        before_capture: Optional[Callable[[], None]] = None,
        what: str = "",
    ) -> _EagerGraph:
        for _ in range(warmup):
            fn()
        if before_capture is not None:
            before_capture()
        fn()  # "capture"
        graphs.append(_EagerGraph(fn, case))
        return graphs[-1]

    monkeypatch.setattr(capture, "capture_cuda_graph", fake_capture)
    args = argparse.Namespace(
        device="cpu", dtype="fp32", size=64, rollout="forward", batch=2, capture="cudagraph"
    )
    case = VitdetBackboneCase(args, 8)
    with torch.inference_mode():
        assert case.use_static_path() == {"window_kept_only": False}
        case.full()
        case.prepare_capture(args)
        pruned_graph = graphs[1]
        static = [dict(slots) for slots in case._static]
        for _ in range(2):
            case.full()  # eager: new tensors, copied into the buffers by the next replay
            for _ in range(3):
                case.dense()
                case.pruned()
        check = case.check_capture()
    assert pruned_graph.replays == 7
    assert check["capture_check"] and check["capture_max_abs_diff"] <= 1e-5
    for s, slots in zip(case.states, static):
        for slot, buf in capture.state_slots(s).items():
            assert buf is slots[slot]
