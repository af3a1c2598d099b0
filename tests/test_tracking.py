"""The local backward warp (method.md §3.1)."""

import torch

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
