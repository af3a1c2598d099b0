"""Windowed attention on kept queries only (``PrunedViT(window_kept_only=True)``, the default): on pruned frames
windowed blocks 1.. compute attention for the K kept queries inside their windows instead of every window. It must
equal the dense-window path (``window_kept_only=False``) frame by frame, and its FLOPs counted on ``meta`` must
equal the ``executed`` closed form (rgtp.flops.EXECUTED has ``windowed_attention_on_kept``)."""

from __future__ import annotations

import functools
from typing import Dict, List, Tuple

import pytest
import torch

from rgtp import flops
from rgtp.config import RGTPConfig
from rgtp.counting import FlopCounter
from rgtp.flops import ViTDetSpec
from rgtp.selection import FrameType
from rgtp.state import StreamState
from rgtp.vit import PrunedViT

ARCH = dict(
    patch_size=16,
    embed_dim=64,
    depth=5,
    num_heads=4,
    window_size=4,
    window_block_indexes=(0, 1, 3, 4),
    rel_pos_size=8,
    pretrain_img_size=64,
)


def _pair(size: int, cfg: RGTPConfig, attention: str) -> Tuple[PrunedViT, PrunedViT]:
    """The optimised model and a dense-window copy with the same random weights."""
    torch.manual_seed(0)
    fast = PrunedViT(img_size=size, **ARCH, attention=attention, rgtp=cfg).eval()
    with torch.no_grad():
        for p in fast.parameters():
            p.normal_(0, 0.2)
    dense = PrunedViT(
        img_size=size, **ARCH, attention=attention, rgtp=cfg, window_kept_only=False
    ).eval()
    dense.load_state_dict(fast.state_dict())
    cpu = torch.device("cpu")
    assert fast.uses_window_kept_only(cpu) and not dense.uses_window_kept_only(cpu)
    return fast, dense


def _recorded(calls: list, block: int, method, *args, **kwargs):
    calls.append(block)
    return method(*args, **kwargs)


def _compare(
    size: int, cfg: RGTPConfig, attention: str, frames: int = 12, batch: int = 2
) -> List[FrameType]:
    """Run both models side by side over ``frames`` frames of random video (``batch`` streams, one stream reset
    midway) and check every output; returns the frame types seen by stream 0."""
    fast, dense = _pair(size, cfg, attention)
    calls = []
    for bi, blk in enumerate(fast.blocks):  # record which blocks take the kept-query windows
        blk._kept_windows = functools.partial(_recorded, calls, bi, blk._kept_windows)
    sf = [StreamState() for _ in range(batch)]
    sd = [StreamState() for _ in range(batch)]
    g = torch.Generator().manual_seed(size)
    grid = (size // 16, size // 16)
    types = []
    with torch.no_grad():
        for t in range(frames):
            if t == 7:  # a reset of one stream mid-video: streams then run different frame types
                sf[1].reset()
                sd[1].reset()
            x = torch.randn(batch, 3, size, size, generator=g)
            a = fast(x, sf)["last_feat"]
            b = dense(x, sd)["last_feat"]
            assert torch.allclose(a, b, rtol=0, atol=1e-5), (t, (a - b).abs().max().item())
            anchors = torch.rand(batch, *grid, generator=g) < 0.3
            ha = fast.update_heatmap(sf, anchors)
            hb = dense.update_heatmap(sd, anchors)
            assert torch.allclose(ha, hb, rtol=0, atol=1e-5), t
            # identical heatmaps pick identical kept tokens, so the comparison stays frame for frame
            for s_f, s_d in zip(sf, sd):
                assert s_f.kept is None or torch.equal(s_f.kept, s_d.kept)
            types.append(sf[0].frame_type)
    rolled = set(cfg.rollout_blocks or ())
    assert set(calls) == {i for i in ARCH["window_block_indexes"] if i >= 1} - rolled
    return types


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize(
    "size", [160, 128], ids=["grid10-padded", "grid8-whole-windows"]
)  # 10x10 tokens with windows of 4 -> padded to 12x12; 8x8 is a multiple of the window
@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_kept_windows_equal_dense_windows_over_many_frames(size, attention, mode):
    cfg = RGTPConfig(
        keep_tokens=23,
        reset_period=4,
        rollout_mode=mode,
        rollout_pool=2 if mode == "forward" else 1,
        tracking_radius=1,
    )
    types = _compare(size, cfg, attention)
    assert types.count(FrameType.PRUNED) >= 8


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_kept_windows_with_sparse_and_clustered_selection(attention):
    """Very few kept tokens (most windows empty and dropped) and random selection (uneven window counts)."""
    _compare(160, RGTPConfig(keep_tokens=2, reset_period=5), attention, frames=7)
    _compare(
        160, RGTPConfig(keep_tokens=60, selection="random", reset_period=6), attention, frames=7
    )


@pytest.mark.parametrize("size", [160, 128])
def test_keep_all_equals_dense(size):
    """K = N: every frame (pruned ones included) equals the dense model on the same frame."""
    cfg = RGTPConfig(keep_ratio=1.0, reset_period=3, rollout_pool=1)
    fast, _ = _pair(size, cfg, "explicit")
    states = [StreamState(), StreamState()]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(5):
            x = torch.randn(2, 3, size, size, generator=g)
            out = fast(x, states)["last_feat"]
            ref = fast(x)["last_feat"]
            assert torch.allclose(out, ref, rtol=0, atol=1e-5)
            fast.update_heatmap(states, torch.zeros(2, size // 16, size // 16, dtype=torch.bool))
    assert states[0].frame_type == FrameType.PRUNED


def test_windowed_block_in_rollout_falls_back_to_dense_windows():
    """A windowed block whose probabilities the rollout needs keeps the dense-window path (same results)."""
    cfg = RGTPConfig(keep_tokens=17, reset_period=4, rollout_blocks=(1, 2), rollout_pool=1)
    _compare(160, cfg, "sdpa", frames=6)


_SHAPE = {k: v for k, v in ARCH.items() if k != "pretrain_img_size"}
SPEC_PADDED = ViTDetSpec(img_size=160, **_SHAPE)
SPEC_WHOLE = ViTDetSpec(img_size=128, **_SHAPE)


@pytest.mark.parametrize("spec", [SPEC_PADDED, SPEC_WHOLE], ids=["padded", "whole"])
@pytest.mark.parametrize(
    "cfg",
    [
        RGTPConfig(keep_tokens=23, reset_period=3, rollout_pool=2),
        RGTPConfig(keep_tokens=5, reset_period=3, rollout_mode="backward", rollout_blocks=(1, 2)),
    ],
    ids=["global-rollout", "windowed-in-rollout"],
)
def test_measured_flops_on_meta_equal_closed_form(spec, cfg):
    frames = flops.vitdet_frame_flops_measured(spec, cfg, num_frames=4)
    seen = set()
    for fr in frames:
        for conv, cats in (("paper", fr.paper_categories), ("executed", fr.executed_categories)):
            assert cats == flops.vitdet_frame_flops(spec, cfg, fr.frame_type, conv).by_category()
        seen.add(fr.frame_type)
    assert FrameType.PRUNED in seen
    pruned = next(fr for fr in frames if fr.frame_type == FrameType.PRUNED)
    assert pruned.executed < pruned.paper


def test_measured_flops_on_cpu_equal_meta_and_batch_scales():
    """Counting with real data (grouping, padding to the fullest window) charges exactly what the meta run does,
    per stream: padding slots are not charged."""
    spec, cfg = SPEC_PADDED, RGTPConfig(keep_tokens=23, reset_period=8, rollout_pool=2)
    fast, _ = _pair(160, cfg, "sdpa")
    states = [StreamState(), StreamState()]
    counts: List[Dict[str, int]] = []
    with torch.no_grad():
        for _ in range(2):
            with FlopCounter() as c:
                fast(torch.randn(2, 3, 160, 160), states)
                fast.update_heatmap(states, torch.zeros(2, 10, 10, dtype=torch.bool))
            counts.append(dict(c.executed.counts))
    closed = flops.vitdet_frame_flops(spec, cfg, FrameType.PRUNED, "executed").by_category()
    assert states[0].frame_type == FrameType.PRUNED
    assert counts[1] == {
        cat: 2 * v for cat, v in closed.items()
    }  # two streams, each its closed form


def test_window_kept_only_defaults_off_on_cuda_only() -> None:
    """Default (None): on for CPU (a host read costs nothing), off for CUDA (it would synchronise the device and break
    graph capture); an explicit True/False wins everywhere."""
    model = PrunedViT(img_size=64, **ARCH)
    assert model.window_kept_only is None
    assert model.uses_window_kept_only(torch.device("cpu"))
    assert not model.uses_window_kept_only(torch.device("cuda"))
    model.window_kept_only = True
    assert model.uses_window_kept_only(torch.device("cuda"))
    model.window_kept_only = False
    assert not model.uses_window_kept_only(torch.device("cpu"))
