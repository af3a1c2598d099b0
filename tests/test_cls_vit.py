"""Contracts of rgtp.cls_vit: the class-token ViT with RGTP (docs/method.md §1b, §2.4, §4.2, §4.4, §5.3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rgtp import counting
from rgtp.cls_vit import ClsViT, nearest_kept_tokens
from rgtp.config import ConfigError, RGTPConfig
from rgtp.selection import FrameType, grid_pattern


def _model(grid=(6, 6), dim=32, depth=3, heads=4, **rgtp):
    torch.manual_seed(0)
    cfg = RGTPConfig(**{"full_on_reset": False, "reset_pattern": "1in2", **rgtp}) if rgtp else None
    m = ClsViT(grid, embed_dim=dim, depth=depth, num_heads=heads, rgtp=cfg).eval()
    with torch.no_grad():  # non-trivial LN/bias parameters
        for name, p in m.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


def _reference_step(m: ClsViT, emb: torch.Tensor, kept: torch.Tensor | None):
    """Plain-torch reimplementation of one step (docs/method.md §2.4 pseudocode) for one batch row."""
    blocks = m.blocks
    n = emb.shape[1]

    def attn(blk, x):
        h = blk.attn.num_heads
        y = F.layer_norm(x, (x.shape[-1],), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        q, k, v = (
            (y @ blk.attn.qkv.weight.T + blk.attn.qkv.bias)
            .reshape(x.shape[0], x.shape[1], 3, h, -1)
            .unbind(2)
        )
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        p = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])).softmax(-1)
        o = (p @ v).transpose(1, 2).reshape(x.shape)
        return x + o @ blk.attn.proj.weight.T + blk.attn.proj.bias, p, k

    def mlp(blk, x):
        y = F.layer_norm(x, (x.shape[-1],), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(y)))

    def a_hat(p):
        a = p.square().mean(1).sqrt()
        a = (a + torch.eye(a.shape[-1])) / 2
        return a / a.sum(-1, keepdim=True)

    x = torch.cat([m.cls_token.expand(emb.shape[0], -1, -1), emb], 1) + m.pos_embed
    x, p0, k0 = attn(blocks[0], x)
    r = a_hat(p0)
    if kept is not None:
        idx = torch.cat([torch.zeros(1, dtype=torch.long), kept + 1])
        x = x[:, idx]
        r = r[:, idx][:, :, idx]
    x = mlp(blocks[0], x)
    for blk in blocks[1:]:
        x, p, _ = attn(blk, x)
        r = a_hat(p) @ r
        x = mlp(blk, x)
    out = m.norm(x[:, 0])
    imp = r[0, 0, 1:]
    heat = torch.zeros(n)
    if kept is None:
        heat = imp
    else:
        heat[kept] = imp
        desc = k0[0, :, 1:].mean(0)  # (N, d)
        for p in range(n):
            if p not in kept.tolist():
                heat[p] = heat[kept[(desc[kept] @ desc[p]).argmax()]]
    return out, heat / heat.sum()


def test_steps_follow_the_schedule_with_static_kept_counts():
    m = _model(
        keep_ratio=0.5,
        fg_sample_ratio=0.5,
        bg_sample_ratio=0.25,
        reset_period=4,
        reset_pattern="1in4",
    )
    state = m.new_state()
    emb = torch.randn(3, 8, 36, 32)
    types = []
    with torch.no_grad():
        for t in range(8):
            m(emb[:, t], state)
            types.append(state.frame_type)
            if state.kept is not None:
                k = state.kept
                assert torch.equal(k, k.sort(dim=1).values) and all(
                    len(set(r.tolist())) == k.shape[1] for r in k
                )
            assert state.heatmap.shape == (3, 36)
            assert torch.allclose(state.heatmap.sum(1), torch.ones(3))
    # fg 18 strided by 2 -> 9, bg pool 18 strided by 4 -> 5; 1in4 on 6x6 -> 9
    assert state.kept_counts == [36, 14, 14, 14, 9, 14, 14, 14]
    assert (
        types[0] == FrameType.FIRST and types[4] == FrameType.RESET and types[1] == FrameType.PRUNED
    )
    assert [
        m.num_kept(FrameType.FIRST),
        m.num_kept(FrameType.RESET),
        m.num_kept(FrameType.PRUNED),
    ] == [36, 9, 14]
    state.reset()
    assert state.t == -1 and state.heatmap is None and state.kept_counts == []
    with torch.no_grad():
        m(emb[:, 0], state)
    assert state.frame_type == FrameType.FIRST and state.kept is None


def test_reset_step_uses_the_grid_pattern():
    m = _model(keep_ratio=0.3, reset_period=2, reset_pattern="1in2")
    state = m.new_state()
    emb = torch.randn(2, 3, 36, 32)
    with torch.no_grad():
        for t in range(3):
            m(emb[:, t], state)
    assert state.frame_type == FrameType.RESET
    assert torch.equal(state.kept, grid_pattern("1in2", (6, 6)).expand(2, -1))


@pytest.mark.parametrize("kind", ["full", "pruned", "reset"])
def test_step_matches_the_reference_computation(kind):
    m = _model(keep_ratio=0.4, bg_sample_ratio=0.2, reset_period=3)
    state = m.new_state()
    emb = torch.randn(1, 3, 36, 32)
    steps = {"full": 1, "pruned": 2, "reset": 4}[kind]
    with torch.no_grad():
        for t in range(steps):
            out = m(emb[:, t % 3], state)
        ref_out, ref_heat = _reference_step(
            m, emb[:, (steps - 1) % 3], None if state.kept is None else state.kept[0]
        )
    assert (state.kept is None) == (kind == "full")
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state.heatmap[0], ref_heat, atol=1e-6, rtol=1e-4)


def test_keep_all_equals_dense():
    m = _model(keep_ratio=1.0, reset_period=100)
    emb = torch.randn(4, 5, 36, 32)
    state = m.new_state()
    with torch.no_grad():
        for t in range(5):
            pruned = m(emb[:, t], state)
            dense = m(emb[:, t])
            torch.testing.assert_close(pruned, dense, atol=1e-5, rtol=1e-5)
    assert state.kept_counts == [36] * 5 and state.kept is not None  # pruned path, nothing dropped


def test_pruning_changes_the_output():
    m = _model(keep_ratio=0.25, reset_period=100)
    emb = torch.randn(2, 2, 36, 32)
    state = m.new_state()
    with torch.no_grad():
        m(emb[:, 0], state)
        out = m(emb[:, 1], state)
    assert not torch.allclose(out, m(emb[:, 1]), atol=1e-4)


def test_tracking_moves_importance_with_the_content():
    m = _model(grid=(4, 4), dim=64, keep_tokens=1, reset_period=100)
    state = m.new_state()
    prev = torch.randn(1, 16, 64) * 3
    with torch.no_grad():
        m(prev, state)
    state.heatmap = torch.zeros(1, 16)
    state.heatmap[0, 5] = 1.0  # (1, 1)
    grid = prev.reshape(1, 4, 4, 64)
    cur = torch.cat([grid[:, :, :1], grid[:, :, :-1]], dim=2).reshape(
        1, 16, 64
    )  # content moves one token right
    with torch.no_grad():
        m(cur, state)
    assert state.kept.tolist() == [[6]]  # (1, 2)
    m.rgtp = m.rgtp.replace(tracking_radius=0)
    state.heatmap = torch.zeros(1, 16)
    state.heatmap[0, 5] = 1.0
    with torch.no_grad():
        m(cur, state)
    assert state.kept.tolist() == [[5]]


def test_nearest_kept_tokens_and_its_flops():
    keys = torch.zeros(1, 2, 5, 3)
    desc = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0], [0, 0.2, 0.8]])
    keys[0, 0] = desc * 2
    keys[0, 1] = 0  # averaged over heads: desc
    kept = torch.tensor([[0, 1, 2]])
    with counting.FlopCounter() as c:
        src = nearest_kept_tokens(keys, kept)
    assert src.tolist() == [[0, 1, 2, 0, 2]]
    assert c.paper.counts["matmul"] == 2 * 3 * 3


def test_paper_flops_of_each_step_kinetics_keep_0215():
    """docs/method.md §5.3: t=0 17.5593 G, reset (98 kept) 8.8944 G, rollout step (42 kept) 4.1218 G."""
    cfg = RGTPConfig(keep_ratio=0.215, reset_period=8, full_on_reset=False, reset_pattern="1in2")
    with torch.device("meta"):
        m = ClsViT((14, 14), rgtp=cfg)
        emb = torch.empty(1, 196, 768)
    state = m.new_state()
    per = []
    for _ in range(9):
        with counting.FlopCounter() as c:
            m(emb, state)
        per.append(round(c.paper.total / 1e9, 4))
    assert per[0] == 17.5593 and per[1] == 4.1218 and per[8] == 8.8944
    with counting.FlopCounter() as c:
        m(emb)  # dense: 17.4676 G (no rollout)
    assert round(c.paper.total / 1e9, 4) == 17.4676


def test_bad_input_is_rejected():
    m = _model(keep_ratio=0.5)
    with pytest.raises(ValueError, match=r"expects \(B, 36, 32\)"):
        m(torch.randn(1, 35, 32))
    with pytest.raises(ValueError, match="rollout_blocks"):
        ClsViT(
            (2, 2),
            embed_dim=8,
            depth=2,
            num_heads=2,
            rgtp=RGTPConfig(keep_ratio=0.5, rollout_blocks=[5]),
        )
    with pytest.raises(ValueError, match="divisible"):
        ClsViT((2, 2), embed_dim=10, depth=1, num_heads=4)


@pytest.mark.parametrize(
    "field, value",
    [("rollout_mode", "backward"), ("rollout_pool", 2), ("rel_pos_interp", "detectron2")],
)
def test_settings_the_class_token_vit_cannot_honour_are_rejected(field, value):
    cfg = RGTPConfig(full_on_reset=False, reset_pattern="1in2", keep_ratio=0.5)
    with pytest.raises(ConfigError, match=rf"{field}={value!r}.*ClsViT"):
        ClsViT((6, 6), embed_dim=32, depth=2, num_heads=4, rgtp=cfg.replace(**{field: value}))
