"""Selection and schedule (docs/method.md §3.2–§4.2)."""

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


def test_ties_at_rank_k_low_keeps_lower_index_high_keeps_higher():
    # token 1 is first; tokens 0, 2, 3 tie for the one remaining rank
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    assert select_tokens(scores, 2).tolist() == [[0, 1]]  # default = "low" (stable)
    assert select_tokens(scores, 2, ties="low").tolist() == [[0, 1]]
    assert select_tokens(scores, 2, ties="high").tolist() == [[1, 3]]
    assert select_tokens(scores, 2, ties="high", raster=False).tolist() == [[1, 3]]
    # no tie at rank K: both rules agree
    assert select_tokens(scores, 1, ties="high").tolist() == [[1]]
    assert select_tokens(scores, 4, ties="high").tolist() == select_tokens(scores, 4).tolist()


def test_ties_with_strided_foreground_move_the_kept_rank():
    # the foreground {0, 1, 2, 3} is the same under both rules, but its order decides which ranks 0, 2 keep
    scores = torch.tensor([[0.3, 0.3, 0.3, 0.3, 0.0, 0.0], [0.0, 0.7, 0.0, 0.7, 0.7, 0.2]])
    low = select_tokens(scores, 4, fg_ratio=0.5, bg_ratio=0.5, raster=False, ties="low")
    high = select_tokens(scores, 4, fg_ratio=0.5, bg_ratio=0.5, raster=False, ties="high")
    # row 0: low order 0,1,2,3 -> fg 0, 2; high order 3,2,1,0 -> fg 3, 1; bg raster (4, 5) every 2nd -> 4
    # row 1: low order 1,3,4,5 -> fg 1, 4; high order 4,3,1,5 -> fg 4, 1; bg raster (0, 2) every 2nd -> 0
    assert low.tolist() == [[0, 2, 4], [1, 4, 0]]
    assert high.tolist() == [[3, 1, 4], [4, 1, 0]]
    assert select_tokens(scores, 4, 0.5, 0.5, ties="high").tolist() == [[1, 3, 4], [0, 1, 4]]


def test_tie_rules_equal_a_plain_python_sort():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (3, 40), generator=g).float()  # many exact ties
    for ties, sign in (("low", 1), ("high", -1)):
        for k, fg, bg in ((7, 1.0, 0.0), (9, 0.5, 0.0), (10, 0.5, 0.25)):
            got = select_tokens(scores, k, fg, bg, raster=False, ties=ties)
            for row, kept in zip(scores.tolist(), got.tolist()):
                order = sorted(range(40), key=lambda i: (-row[i], sign * i))
                fg_kept = order[:k][:: int(round(1 / fg))]
                bg_kept = sorted(order[k:])[:: int(round(1 / bg))] if bg > 0 else []
                assert kept == fg_kept + bg_kept, (ties, k, fg, bg)


def test_unknown_tie_rule_is_rejected():
    with pytest.raises(ValueError, match=r"ties='first'.*\('low', 'high'\)"):
        select_tokens(torch.zeros(1, 4), 2, ties="first")


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
