"""Selection and schedule (method.md §3.2–§4.2)."""

import pytest
import torch

from rgtp.config import ConfigError, RGTPConfig
from rgtp.selection import FrameType, frame_type, grid_pattern, num_selected, select_tokens


@pytest.mark.parametrize("grid", [(14, 14), (20, 20), (6, 10)])
def test_grid_patterns_keep_half_and_quarter(grid):
    n = grid[0] * grid[1]
    assert len(grid_pattern("1in2", grid)) == n // 2
    assert len(grid_pattern("1in4", grid)) == n // 4


def test_grid_patterns_non_square_exact():
    assert grid_pattern("1in2", (3, 5)).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert grid_pattern("1in4", (3, 5)).tolist() == [0, 2, 4, 10, 12, 14]
    with pytest.raises(ValueError, match="1in2"):
        grid_pattern("1in9", (3, 3))


def test_frame_schedule():
    types = [frame_type(t, 8) for t in range(17)]
    assert types[0] == FrameType.FIRST and types[8] == types[16] == FrameType.RESET
    assert sum(t == FrameType.PRUNED for t in types) == 14


def test_topk_foreground_strided_foreground_and_background():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.0]])
    assert select_tokens(scores, 3).tolist() == [[0, 2, 4]]
    # fg ranks 0, 2 of (0, 2, 4, 6) -> tokens 0, 4; bg raster (1,3,5,7,8,9) every 3rd -> 1, 7
    kept = select_tokens(scores, 4, fg_ratio=0.5, bg_ratio=1 / 3)
    assert kept.tolist() == [[0, 1, 4, 7]]
    unsorted = select_tokens(scores, 4, fg_ratio=0.5, bg_ratio=1 / 3, raster=False)
    assert unsorted.tolist() == [[0, 4, 1, 7]]


@pytest.mark.parametrize(
    "k,fg,bg,expected",
    [
        (300, 1, 0.25, 325),
        (180, 1, 1 / 6, 217),
        (120, 1, 0.05, 134),
        (160, 0.5, 0.09, 102),
        (96, 0.5, 0.03, 58),
        (56, 0.5, 0, 28),
    ],
)
def test_epic_kept_counts(k, fg, bg, expected):
    assert select_tokens(torch.rand(2, 400), k, fg, bg).shape == (2, expected)
    assert num_selected(400, k, fg, bg) == expected


def test_keep_counts_from_ratio():
    cfg = RGTPConfig(keep_ratio=0.29)
    assert cfg.num_keep(1764) == 512
    assert RGTPConfig(keep_ratio=0.435).num_keep(1764) == 767
    assert RGTPConfig(keep_ratio=0.342).num_keep(4096) == 1401
    assert RGTPConfig(keep_ratio=0.097).num_keep(4096) == 397


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(reset_period=0), "reset_period"),
        (dict(head_fusion="sum"), "head_fusion"),
        (dict(keep_tokens=0), "keep_tokens"),
        (dict(rollout_mode="sideways"), "rollout_mode"),
        (dict(full_on_reset=False), "reset_pattern"),
        (dict(reset_pattern="1in3"), "reset_pattern"),
        (dict(rel_pos_interp="nearest"), "rel_pos_interp"),
    ],
)
def test_bad_settings_name_key_and_allowed(kwargs, key):
    with pytest.raises(ConfigError, match=f"{key}=.*allowed"):
        RGTPConfig(**kwargs)


def test_keep_above_n_rejected():
    with pytest.raises(ConfigError, match=r"keep_tokens=2000.*\[1, N=1764\]"):
        RGTPConfig(keep_tokens=2000).validate(1764)
