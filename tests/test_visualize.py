"""rgtp.visualize (token geometry, kept-grid dimming, heatmap overlay, captions); the trade-off plot is tested in
tests/test_tradeoff.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgtp import visualize as vis


def _grey(h: int = 50, w: int = 70, v: int = 200) -> np.ndarray:
    return np.full((h, w, 3), v, dtype=np.uint8)


def test_token_index_map_fractional_cells_and_origin():
    # a 3x4 grid of 12.5 x 10.25 px cells starting at (5, 3.5) on a 50x70 image
    geom = vis.TokenGeometry((3, 4), (12.5, 10.25), (5.0, 3.5))
    idx = vis.token_index_map(geom, (50, 70))
    assert idx.shape == (50, 70)
    assert (idx[:5] == -1).all() and (idx[:, :3] == -1).all()  # above / left of the grid
    # pixel centres: rows 5..41 (5.5 .. 41.5 < 42.5) and columns 3..43 (3.5 .. 43.5 < 44.5) are covered
    assert (idx[42:] == -1).all() and (idx[:, 44:] == -1).all()  # below / right of it
    assert idx[5, 3] == 0 and idx[5 + 13, 3 + 11] == 5 and idx[41, 43] == 11
    assert set(np.unique(idx[idx >= 0])) == set(range(12))


def test_kept_grid_dims_pruned_cells_and_leaves_kept_cells():
    img = _grey()
    geom = vis.TokenGeometry.covering((5, 7), img.shape[:2])  # 10x10 px cells
    kept = torch.tensor([0, 8, 34])
    out = vis.draw_kept_grid(img, kept, geom, dim=0.3, line_color=None)
    mask = vis.kept_mask(kept, 35).reshape(5, 7)
    for r in range(5):
        for c in range(7):
            cell = out[10 * r : 10 * r + 10, 10 * c : 10 * c + 10]
            assert (cell == (200 if mask[r, c] else 60)).all(), (r, c)
    assert (img == 200).all()  # input untouched
    lined = vis.draw_kept_grid(img, kept, geom, dim=0.3)
    assert (lined[1:9, 1:9] == 200).all()  # kept cell interior untouched
    assert (lined[0, 0:10] != 200).any()  # its border is outlined
    assert (lined[20:30, 20:30] == 60).all()  # a pruned cell gets no outline
    full = vis.draw_kept_grid(img, None, geom)  # a full frame: nothing dimmed, no outline
    assert (full == img).all()


def test_kept_mask_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 35\)"):
        vis.kept_mask(np.array([3, 35]), 35)


def test_heatmap_overlay_colours_by_importance_and_only_inside_grid():
    img = _grey(60, 80, 120)
    geom = vis.TokenGeometry((2, 2), (16.0, 16.0), (10.0, 20.0))  # a 32x32 square inside the image
    heat = torch.tensor([0.0, 0.1, 0.2, 1.0])
    out = vis.overlay_heatmap(img, heat, geom)
    idx = vis.token_index_map(geom, img.shape[:2])
    assert (out[idx < 0] == 120).all()  # outside the grid: unchanged
    hot, cold = out[idx == 3].astype(int), out[idx == 0].astype(int)
    assert (hot == hot[0]).all() and (cold == cold[0]).all()  # one colour per token
    assert hot[0].sum() > cold[0].sum() + 150  # bright for important, dark for unimportant
    with pytest.raises(ValueError, match="4 tokens"):
        vis.overlay_heatmap(img, np.zeros(5), geom)


def test_colorize_is_monotone_in_brightness():
    rgb = vis.colorize(np.linspace(0, 1, 11)).astype(int).sum(axis=1)
    assert (np.diff(rgb) > 0).all()


def test_caption_height_is_independent_of_text_and_even_padding():
    img = _grey(51, 101)
    a = vis.add_caption(img, ["short", "x"])
    b = vis.add_caption(img, ["a much longer caption line | 123 GFLOPs | 45 ms", "top-5: ..."])
    assert a.shape == b.shape and a.shape[1] == 101 and a.shape[0] > 51
    assert (a[:51] == img).all() and not (a[51:] == b[51:]).all()
    even = vis.pad_to_even(a)
    assert even.shape[0] % 2 == 0 and even.shape[1] % 2 == 0
    assert vis.hstack([img, img], gap=3).shape == (51, 205, 3)


def test_draw_boxes_draws_inside_the_frame():
    img = _grey(40, 60, 0)
    out = vis.draw_boxes(img, torch.tensor([[5.0, 5.0, 30.0, 25.0]]), ["car 0.90"], [2])
    assert out.shape == img.shape and out[5, 10].any() and not out[15, 15].any()
