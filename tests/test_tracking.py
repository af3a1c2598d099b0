"""The local backward warp (docs/method.md §3.1), with both border rules."""

import pytest
import torch

from rgtp.counting import FlopCounter
from rgtp.tracking import best_offsets, warp_heatmap


def test_warp_moves_planted_bright_patch_with_its_content():
    torch.manual_seed(0)
    h, w, c = 6, 7, 16
    # background: a common texture vector plus noise, orthogonal to the object's appearance
    texture = torch.zeros(c)
    texture[1:] = 1 / (c - 1) ** 0.5
    prev = texture + torch.randn(1, h * w, c) * 0.05
    cur = texture + torch.randn(1, h * w, c) * 0.05
    prev[..., 0] = cur[..., 0] = 0
    bright = torch.zeros(c)
    bright[0] = 10.0
    p_prev, p_cur = 2 * w + 3, 3 * w + 4  # the object moves one token down and one right
    prev[0, p_prev] = bright
    cur[0, p_cur] = bright
    heat = torch.full((1, h * w), 0.01)
    heat[0, p_prev] = 1.0
    warped = warp_heatmap(heat, cur, prev, (h, w), radius=1)
    assert warped[0, p_cur].item() == 1.0
    assert (warped[0] == 1.0).sum().item() == 1  # only the token now holding the object carries it


def test_out_of_grid_never_wins_and_ties_go_to_first_offset():
    h, w, c = 4, 5, 3
    v = torch.ones(c)
    cur = v.expand(1, h * w, c).clone()
    prev = (-v).expand(1, h * w, c).clone()  # every in-grid similarity is -3 < 0 (= zero padding)
    src = best_offsets(cur, prev, (h, w), radius=1)[0]
    assert src[0].item() == 0  # corner: first in-grid offset is (0, 0)
    assert src[w + 1].item() == 0  # interior (1, 1): all tie -> (-1, -1) -> token 0
    assert src[2 * w + 3].item() == w + 2
    heat = torch.arange(h * w, dtype=torch.float32)[None]
    assert torch.equal(warp_heatmap(heat, cur, prev, (h, w), radius=0), heat)


def test_radius_two_reaches_two_tokens():
    torch.manual_seed(1)
    h, w, c = 7, 7, 8
    prev = torch.randn(1, h * w, c) * 0.01
    cur = torch.randn(1, h * w, c) * 0.01
    prev[0, 1 * w + 1] = 5.0
    cur[0, 3 * w + 3] = 5.0
    assert best_offsets(cur, prev, (h, w), radius=2)[0, 3 * w + 3].item() == 1 * w + 1
    assert best_offsets(cur, prev, (h, w), radius=1)[0, 3 * w + 3].item() != 1 * w + 1


def _below_minus_100(h=3, w=4):
    """Every in-grid similarity is 10 * -11 = -110 < -100 (the official out-of-grid value)."""
    cur = torch.tensor([10.0, 0.0]).expand(1, h * w, 2).clone()
    prev = torch.tensor([-11.0, 0.0]).expand(1, h * w, 2).clone()
    return cur, prev


def test_in_grid_below_minus_100_exclude_keeps_the_first_in_grid_offset():
    cur, prev = _below_minus_100()
    # all in-grid candidates tie: each token takes its first in-grid offset in raster order
    # grid 3x4:  0 1 2 3 / 4 5 6 7 / 8 9 10 11
    expected = [0, 0, 1, 2, 0, 0, 1, 2, 4, 4, 5, 6]
    assert best_offsets(cur, prev, (3, 4)).tolist() == [expected]
    assert best_offsets(cur, prev, (3, 4), border="exclude").tolist() == [expected]


def test_in_grid_below_minus_100_official_border_tokens_take_token_0():
    cur, prev = _below_minus_100()
    # border tokens: an out-of-grid candidate (-100) beats every in-grid one (-110) and maps to token 0;
    # the two interior tokens (1, 1) and (1, 2) have no out-of-grid candidate: first offset (-1, -1)
    expected = [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert best_offsets(cur, prev, (3, 4), border="official").tolist() == [expected]
    heat = torch.arange(1.0, 13.0)[None]  # token 0 holds 1.0
    warped = warp_heatmap(heat, cur, prev, (3, 4), radius=1, border="official")
    assert warped.tolist() == [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    clean = warp_heatmap(heat, cur, prev, (3, 4), radius=1, border="exclude")
    assert clean.tolist() == [[1.0, 1.0, 2.0, 3.0, 1.0, 1.0, 2.0, 3.0, 5.0, 5.0, 6.0, 7.0]]


def test_official_border_loses_to_in_grid_similarities_above_minus_100():
    # a similarity of -99 beats -100: the official rule changes nothing here
    h, w = 3, 4
    cur = torch.tensor([9.0, 0.0]).expand(1, h * w, 2).clone()
    prev = torch.tensor([-11.0, 0.0]).expand(1, h * w, 2).clone()
    assert torch.equal(
        best_offsets(cur, prev, (h, w), border="official"), best_offsets(cur, prev, (h, w))
    )
    # one token whose in-grid candidates are all below -100 except one exactly at -100: the first wins
    # similarity -100 at token 1, which token 0 reaches at offset (0, +1)
    prev[0, 1] = torch.tensor([-10.0, 0.0])
    cur[0, 0] = torch.tensor([10.0, 0.0])  # token 0: in-grid -110, -100 (token 1), -110, -110
    assert best_offsets(cur, prev, (h, w), border="official")[0, 0].item() == 0  # (-1, -1) first
    assert best_offsets(cur, prev, (h, w), border="exclude")[0, 0].item() == 1


def test_batch_rows_are_independent_and_flops_do_not_depend_on_the_border():
    cur, prev = _below_minus_100()
    g = torch.Generator().manual_seed(0)
    c2, p2 = torch.randn(1, 12, 2, generator=g), torch.randn(1, 12, 2, generator=g)
    cur, prev = torch.cat([cur, c2]), torch.cat([prev, p2])
    counts = {}
    for border in ("exclude", "official"):
        with FlopCounter() as fc:
            src = best_offsets(cur, prev, (3, 4), border=border)
        counts[border] = (fc.executed.total, fc.paper.total)
        assert torch.equal(src[1:], best_offsets(c2, p2, (3, 4), border=border))
    assert counts["exclude"] == counts["official"] == (2 * 12 * 9 * 2,) * 2


def test_unknown_border_is_rejected():
    cur, prev = _below_minus_100()
    with pytest.raises(ValueError, match=r"border='zero'.*\('exclude', 'official'\)"):
        best_offsets(cur, prev, (3, 4), border="zero")
