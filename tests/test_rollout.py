"""Rollout on hand-made 3×3 matrices equals hand-computed values (docs/method.md §2)."""

import math

import pytest
import torch

from rgtp import rollout

S = 1 / math.sqrt(2)


def _p(rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.fixture
def heads():
    p1 = _p([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    p2 = _p([[0, 1, 0], [0, 1, 0], [0, 0, 1]])
    return torch.stack([p1, p2])[None]  # (B=1, H=2, 3, 3)


def test_head_fusions(heads):
    rms = rollout.fuse_heads(heads, "rms")[0]
    assert torch.allclose(rms, _p([[S, S, 0], [0, 1, 0], [0, 0, 1]]))
    mean = rollout.fuse_heads(heads, "mean")[0]
    assert torch.allclose(mean, _p([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
    mx = rollout.fuse_heads(heads, "max")[0]
    assert torch.allclose(mx, _p([[1, 1, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="rms"):
        rollout.fuse_heads(heads, "median")


def test_residual_normalize_hand_values(heads):
    a = rollout.residual_normalize(rollout.fuse_heads(heads, "rms"))[0]
    # row 0: ((S+1)/2, S/2, 0) / ((2S+1)/2) = (1/√2, 1 − 1/√2, 0)
    assert torch.allclose(a, _p([[S, 1 - S, 0], [0, 1, 0], [0, 0, 1]]))
    assert torch.allclose(a.sum(-1), torch.ones(3, dtype=torch.float64))


def test_forward_and_backward_rollout_hand_values(heads):
    a1 = rollout.residual_normalize(rollout.fuse_heads(heads, "rms"))
    a2 = _p([[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1]])[None]
    r = rollout.forward_rollout([a1, a2])[0]
    expected = _p([[S, 1 - S, 0], [S / 2, (1 - S) / 2 + 0.5, 0], [0, 0, 1]])
    assert torch.allclose(r, expected)
    mask = torch.tensor([[True, True, False]])
    fwd = rollout.read_anchor_rows(r[None], mask)[0]
    assert torch.allclose(fwd, _p([0.53033009, 0.46966991, 0]), atol=1e-8)
    bwd = rollout.backward_rollout([a1, a2], rollout.anchor_vector(mask).double())[0]
    assert torch.allclose(bwd, fwd)
    # no anchor: every row counts
    none = rollout.read_anchor_rows(r[None], torch.zeros(1, 3, dtype=torch.bool))[0]
    assert torch.allclose(none, _p([(S + S / 2) / 3, ((1 - S) + (1 - S) / 2 + 0.5) / 3, 1 / 3]))


def test_class_row():
    r = torch.arange(16.0).reshape(1, 4, 4)
    assert torch.equal(rollout.read_class_row(r), torch.tensor([[1.0, 2.0, 3.0]]))


def test_pooling_keeps_row_mass_and_means_over_kept_queries():
    a = torch.rand(1, 16, 16)
    pk = rollout.sum_pool_keys(a, (4, 4))
    assert pk.shape == (1, 16, 4)
    assert torch.allclose(pk.sum(-1), a.sum(-1))
    kept = torch.zeros(1, 16, dtype=torch.bool)
    kept[0, [0, 1, 5]] = True  # pooled cell 0 holds tokens 0, 1, 4, 5 -> three kept
    pooled, count = rollout.pool_queries(pk, (4, 4), kept)
    assert count[0].tolist() == [3, 0, 0, 0]
    assert torch.allclose(pooled[0, 0], (pk[0, 0] + pk[0, 1] + pk[0, 5]) / 3)
    full, _ = rollout.pool_queries(pk, (4, 4))
    assert torch.allclose(full[0, 3], pk[0, [10, 11, 14, 15]].mean(0))


def test_anchor_mask_from_boxes_matches_official_rounding():
    # box (17, 3)-(40, 20) px at stride 16 -> x 1..ceil(2.5)=3 (exclusive), y 0..ceil(1.25)=2 (exclusive)
    boxes = torch.tensor([[17.0, 3.0, 40.0, 20.0], [0.0, 0.0, 200.0, 200.0]])
    m = rollout.anchor_mask_from_boxes(boxes, (5, 5), 16, valid=torch.tensor([True, False]))
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[0:2, 1:3] = True
    assert torch.equal(m, expected)
    # a box covering everything never sets the last row/column (clip to S-1, exclusive end)
    m = rollout.anchor_mask_from_boxes(boxes[1:], (5, 5), 16)
    assert m[:4, :4].all() and not m[4].any() and not m[:, 4].any()


def test_pool_anchor_mask_threshold():
    m = torch.zeros(4, 4, dtype=torch.bool)
    m[0, 0] = m[0, 1] = True  # 2 of 4 -> anchor
    m[2, 2] = True  # 1 of 4 -> not
    assert rollout.pool_anchor_mask(m).tolist() == [[True, False], [False, False]]


def test_upsample_heatmap_constant():
    h = torch.full((1, 4), 0.25)
    up = rollout.upsample_heatmap(h, (4, 4))
    assert up.shape == (1, 16) and torch.allclose(up, torch.full((1, 16), 0.25))


# ---------------------------------------------------------------------------------------------------------------
# The stream update: attention buffers carried from frame to frame (hand-made inputs, hand-computed results)
# ---------------------------------------------------------------------------------------------------------------


def test_refresh_unpooled_replaces_kept_rows_and_carries_the_others():
    previous = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]])
    fresh = torch.tensor([[[0.0, 1.0, 0.0]]])  # the one kept query: token 1
    out = rollout.refresh_attention(fresh, (1, 3), 1, torch.tensor([[1]]), previous)
    expected = torch.tensor([[[0.5, 0.2, 0.3], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]]])
    assert torch.equal(out, expected)
    # the previous buffer is untouched
    assert torch.equal(previous[0, 1], torch.tensor([0.1, 0.8, 0.1]))
    # a second pruned frame keeping token 2: row 1 stays the one written on the frame before
    out2 = rollout.refresh_attention(
        torch.tensor([[[1.0, 0.0, 0.0]]]), (1, 3), 1, torch.tensor([[2]]), out
    )
    assert torch.equal(out2[0, 1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(out2[0, 2], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out2[0, 0], torch.tensor([0.5, 0.2, 0.3]))


def _grid24_attention() -> torch.Tensor:
    """(1, 8, 8) attention on a 2×4 grid, row i = i+1 at key i and 1 at key 7 (distinct per query)."""
    a = torch.zeros(1, 8, 8)
    for i in range(8):
        a[0, i, i] += i + 1
        a[0, i, 7] += 1
    return a


def test_refresh_pooled_full_frame_sums_keys_and_averages_queries():
    # 2×4 grid pooled 2×2 → cells {0,1,4,5} and {2,3,6,7}
    out = rollout.refresh_attention(_grid24_attention(), (2, 4), 2)
    # key-pooled row i: cell of key i gets i+1, cell 1 gets the 1 of key 7
    # cell-0 queries 0,1,4,5: mean over them of [i+1, 1] = [(1+2+5+6)/4, 1] = [3.5, 1]
    # cell-1 queries 2,3,6,7: [0, mean(3+1, 4+1, 7+1, 8+1)] = [0, 6.5]
    assert torch.allclose(out, torch.tensor([[[3.5, 1.0], [0.0, 6.5]]]))


def test_refresh_pooled_pruned_frame_means_over_kept_queries_and_keeps_empty_cells():
    previous = torch.tensor([[[9.0, 9.0], [7.0, 7.0]]])
    kept = torch.tensor([[0, 5]])  # both in cell 0; cell 1 has no kept query
    fresh = _grid24_attention()[:, [0, 5]]
    out = rollout.refresh_attention(fresh, (2, 4), 2, kept, previous)
    # cell 0: mean of the key-pooled rows of queries 0 ([1, 1]) and 5 ([6, 1]) = [3.5, 1]; cell 1 carried
    assert torch.allclose(out, torch.tensor([[[3.5, 1.0], [7.0, 7.0]]]))


def test_rollout_heatmap_backward_falls_back_to_previous_heatmap_off_the_kept_tokens():
    buffers = [torch.zeros(1, 3, 3)]  # (0 + I)/2, row-normalised: the identity
    anchors = torch.tensor([[[True, False, False]]])
    previous = torch.tensor([[0.2, 0.3, 0.5]])
    heat = rollout.rollout_heatmap(
        buffers, anchors, (1, 3), 1, "backward", torch.tensor([[0, 1]]), previous
    )
    # new values at kept tokens 0, 1: [1, 0]; token 2 keeps 0.5; then normalised by 1.5
    assert torch.allclose(heat, torch.tensor([[1 / 1.5, 0.0, 0.5 / 1.5]]))
    full = rollout.rollout_heatmap(buffers, anchors, (1, 3), 1, "backward")
    assert torch.allclose(full, torch.tensor([[1.0, 0.0, 0.0]]))


def test_rollout_heatmap_forward_pooled_reads_pooled_anchors_and_upsamples():
    # pooled 1×2 buffer: the identity after residual normalisation; anchors fill cell 1 only
    buffers = [torch.zeros(1, 2, 2)]
    anchors = torch.zeros(1, 2, 4, dtype=torch.bool)
    anchors[0, :, 2:] = True
    heat = rollout.rollout_heatmap(buffers, anchors, (2, 4), 2, "forward")
    # pooled importance [0, 1], bilinear ×2 along x (align_corners=False): columns 0.., 0.25, 0.75, 1 → rows same
    row = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = torch.cat([row, row]) / (2 * row.sum())
    assert torch.allclose(heat, expected.unsqueeze(0))
