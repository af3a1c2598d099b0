"""Rollout on hand-made 3×3 matrices equals hand-computed values (method.md §2)."""

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
