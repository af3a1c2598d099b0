"""Per-video FLOPs of every paper config equal docs/method.md §5.3, and kept counts per tubelet equal §3.4 (as run,
and as ``rgtp_vivit.flops.kept_counts`` computes them from the settings)."""

from __future__ import annotations

import pytest
from rgtp_vivit.flops import count_video, kept_counts
from vivit_helpers import cfg_from

# config -> (TFLOPs per video, §5.3; kept tokens on rollout tubelets; on reset tubelets), §3.4
PAPER = {
    "kinetics/base.yaml": (3.3596, None, None),
    "kinetics/keep_049.yaml": (1.7888, 96, 98),
    "kinetics/keep_0215.yaml": (1.0157, 42, 98),
    "kinetics/keep_0066.yaml": (0.6080, 13, 98),
    "epic/base.yaml": (7.1220, None, None),
    "epic/fg_300_bg_025.yaml": (5.5077, 325, 200),
    "epic/fg_180_bg_016.yaml": (4.0407, 217, 200),
    "epic/fg_120_bg_005.yaml": (2.9688, 134, 200),
    "epic/fg_160s05_bg_009.yaml": (2.2483, 102, 100),
    "epic/fg_96s05_bg_003.yaml": (1.7056, 58, 100),
    "epic/fg_28s05_bg_00.yaml": (1.3416, 28, 100),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_flops_and_kept_counts(name):
    tflops, k, k_reset = PAPER[name]
    cfg = cfg_from([f"configs/{name}"], [])
    counter, kept = count_video(cfg)
    assert round(counter.paper.total / 1e12, 4) == tflops
    n = 196 if name.startswith("kinetics") else 400
    period = 8 if name.startswith("kinetics") else 4
    if k is None:
        assert kept == [n] * 16
    else:
        expected = [n] + [k_reset if t % period == 0 else k for t in range(1, 16)]
        assert kept == expected
    assert (
        kept_counts(cfg) == kept
    )  # rgtp.selection.kept_count from the settings = what the run kept
    # nothing is wasted in ViViT: executed equals the paper convention (both include the EPIC noun head)
    assert counter.executed.total == counter.paper.total
    if name.startswith("epic"):
        assert cfg.MODEL.NUM_NOUN_CLASSES == 300
