"""``tools/benchmark.py --model vitdet-detector`` (:mod:`rgtp_apps.benchmark.detector`) on the tiny detector: the
per-component times, the head FLOPs, the peak memory per frame type, and only the frames it claims to time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rgtp_apps.benchmark.cli import main
from rgtp_apps.benchmark.detector import COMPONENTS
from vitdet_helpers import TINY

ARGS = ["--model", "vitdet-detector", "--size", "128", "--keep", "16", "--device", "cpu"]
ARGS += ["--warmup", "1", "--repeats", "2", "--threads", "1"]


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_detector_row_components_flops_and_peaks(tmp_path: Path) -> None:
    rows = main(ARGS + ["--out", str(tmp_path), "--opts", *TINY])
    (row,) = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    assert row == json.loads(json.dumps(rows[0]))
    assert row["incremental_head"] is True and row["head_cache_mb_per_stream"] > 0
    for kind in ("dense", "full", "pruned"):
        total = 0.0
        for comp in COMPONENTS:
            total += row[f"{kind}_{comp}_ms"]
        assert total > 0
        assert row[f"{kind}_backbone_ms"] > 0 and row[f"{kind}_roi_heads_ms"] > 0
    assert row["dense_rollout_ms"] == 0 and row["pruned_rollout_ms"] > 0
    # the head, outside the paper's convention: dense on dense and full frames, less on pruned ones
    assert row["dense_head_executed_gflops"] == pytest.approx(row["dense_head_dense_gflops"])
    assert row["full_head_executed_gflops"] == pytest.approx(row["full_head_dense_gflops"])
    assert row["pruned_head_executed_gflops"] < row["pruned_head_dense_gflops"]
    # the whole detector's FLOP ratio: backbone and head as executed, weighted by the schedule (by hand)
    d = row["dense_executed_gflops"] + row["dense_head_executed_gflops"]
    fu = row["full_executed_gflops"] + row["full_head_executed_gflops"]
    p = row["pruned_executed_gflops"] + row["pruned_head_executed_gflops"]
    f = row["full_fraction"]
    assert row["flop_ratio_pruned_whole"] == pytest.approx(d / p)
    assert row["flop_ratio_weighted_whole"] == pytest.approx(d / (f * fu + (1 - f) * p))
    assert 0 < row["roi_reused_fraction"] < 1
    for kind in ("dense", "full", "pruned", "reset"):
        assert row[f"peak_{kind}_mb"] > 0
    assert row["peak_reset_ratio"] == pytest.approx(row["peak_reset_mb"] / row["peak_dense_mb"])
    table = (tmp_path / "benchmark.md").read_text()
    assert "proposal selection + NMS" in table and "peak MB dense / full / pruned / reset" in table
    assert f"backbone, {row['flop_ratio_weighted_whole']:.2f}× whole" in table


def test_detector_without_the_incremental_head(tmp_path: Path) -> None:
    main(ARGS + ["--no-incremental-head", "--out", str(tmp_path), "--opts", *TINY])
    (row,) = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    assert row["incremental_head"] is False and row["head_cache_mb_per_stream"] == 0
    assert row["pruned_head_executed_gflops"] == pytest.approx(row["pruned_head_dense_gflops"])
    assert row["roi_reused_fraction"] == 0
