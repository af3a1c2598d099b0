"""The pruned ViTDet backbone: keep-all equals dense, detectron2 equality, streams side by side, meta counting."""

import functools

import pytest
import torch

from rgtp.config import ConfigError, RGTPConfig
from rgtp.counting import FlopCounter
from rgtp.selection import FrameType
from rgtp.state import StreamState
from rgtp.vit import PrunedViT

SMALL = dict(
    img_size=128,
    patch_size=16,
    embed_dim=64,
    depth=4,
    num_heads=4,
    window_size=4,
    window_block_indexes=(0, 2),
    rel_pos_size=8,
    pretrain_img_size=64,
)


def _model(rgtp=None, **kw):
    torch.manual_seed(0)
    m = PrunedViT(**{**SMALL, **kw}, rgtp=rgtp).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


def _frames(n, size=128, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 3, size, size, generator=g)


def _run_stream(model, frames, state=None, anchors=None):
    state = state or StreamState()
    outs = []
    with torch.no_grad():
        for i, f in enumerate(frames):
            outs.append(model(f, [state])["last_feat"])
            grid = state.grid
            m = torch.zeros(1, *grid, dtype=torch.bool)
            if anchors is not None:
                m[0, anchors[i % len(anchors)]] = True
            model.update_heatmap([state], m)
    return outs


@pytest.mark.parametrize(
    "cfg",
    [
        RGTPConfig(keep_ratio=1.0, reset_period=3, rollout_pool=2),
        RGTPConfig(keep_ratio=1.0, rollout_mode="backward"),
        RGTPConfig(enabled=False),
    ],
    ids=["keep-all-pooled-forward", "keep-all-backward", "disabled"],
)
@pytest.mark.parametrize("size", [128, 96])
@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_keep_all_equals_dense(cfg, size, attention):
    dense = _model(attention=attention)
    pruned = _model(cfg, attention=attention)
    frames = _frames(7, size)
    with torch.no_grad():
        ref = [dense(f)["last_feat"] for f in frames]
    outs = _run_stream(pruned, frames)
    for a, b in zip(ref, outs):
        if attention == "explicit":  # the same kernels on the same shapes: bit-identical
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_pruned_frames_differ_from_dense_and_reuse_cache():
    dense = _model()
    pruned = _model(RGTPConfig(keep_tokens=16, reset_period=4))
    frames = _frames(5)
    state = StreamState()
    outs = _run_stream(pruned, frames, state)
    with torch.no_grad():
        ref = [dense(f)["last_feat"] for f in frames]
    torch.testing.assert_close(outs[0], ref[0], rtol=1e-5, atol=1e-5)  # first frame is full
    assert not torch.allclose(outs[1], ref[1], atol=1e-3)
    torch.testing.assert_close(outs[4], ref[4], rtol=1e-5, atol=1e-5)  # reset frame is full
    assert state.frame_type == FrameType.RESET
    # on a pruned frame, pruned positions keep the previous output exactly
    s2 = StreamState()
    o = _run_stream(pruned, frames[:2], s2)
    kept = s2.kept
    assert kept.shape == (16,) and torch.all(kept[1:] > kept[:-1])
    pruned_pos = torch.ones(64, dtype=torch.bool)
    pruned_pos[kept] = False
    f0, f1 = (t.flatten(2)[0].t() for t in o)
    assert torch.equal(f1[pruned_pos], f0[pruned_pos])
    assert not torch.equal(f1[kept], f0[kept])


def test_equals_detectron2_vit():
    from detectron2.modeling import ViT

    for size, mode in ((128, "paper"), (96, "detectron2"), (160, "detectron2")):
        torch.manual_seed(0)
        d2 = ViT(
            **{k: v for k, v in SMALL.items() if k != "rel_pos_size"},
            use_rel_pos=True,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
        ).eval()
        with torch.no_grad():
            for p in d2.parameters():
                p.normal_(0, 0.2)
        ours = PrunedViT(**SMALL, rgtp=RGTPConfig(rel_pos_interp=mode)).eval()
        ours.load_state_dict(d2.state_dict(), strict=True)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(
                ours(x)["last_feat"], d2(x)["last_feat"], rtol=1e-5, atol=1e-5
            )


def test_paper_and_detectron2_rel_pos_interpolation_differ_off_grid():
    x = torch.randn(1, 3, 96, 96)
    a = _model(RGTPConfig(rel_pos_interp="paper"))
    b = _model(RGTPConfig(rel_pos_interp="detectron2"))
    with torch.no_grad():
        assert not torch.allclose(a(x)["last_feat"], b(x)["last_feat"], atol=1e-4)
        # on the native grid (8 = rel_pos_size) no interpolation happens
        x = torch.randn(1, 3, 128, 128)
        torch.testing.assert_close(a(x)["last_feat"], b(x)["last_feat"])


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_interleaved_and_batched_streams_equal_each_stream_alone(mode):
    cfg = RGTPConfig(
        keep_tokens=20,
        reset_period=3,
        rollout_mode=mode,
        rollout_pool=2 if mode == "forward" else 1,
    )
    model = _model(cfg)
    va, vb = _frames(6, seed=1), _frames(6, seed=2)
    anchors_a, anchors_b = [slice(0, 3)], [slice(4, 8)]
    alone_a = _run_stream(model, va, anchors=anchors_a)
    alone_b = _run_stream(model, vb, anchors=anchors_b)
    # interleaved one frame at a time
    sa, sb = StreamState(), StreamState()
    for i in range(6):
        for s, v, anc, ref in ((sa, va, anchors_a, alone_a), (sb, vb, anchors_b, alone_b)):
            out = _run_stream(model, v[i : i + 1], s, anchors=anc)[0]
            torch.testing.assert_close(out, ref[i], rtol=1e-5, atol=1e-5)
    # batched: stream b starts two frames later, so the batch mixes frame types
    sa, sb = StreamState(), StreamState()
    with torch.no_grad():
        for i in range(2):
            torch.testing.assert_close(
                _run_stream(model, va[i : i + 1], sa, anchors_a)[0], alone_a[i]
            )
        for i in range(4):
            x = torch.cat([va[i + 2], vb[i]])
            out = model(x, [sa, sb])["last_feat"]
            m = torch.zeros(2, 8, 8, dtype=torch.bool)
            m[0, anchors_a[0]] = True
            m[1, anchors_b[0]] = True
            model.update_heatmap([sa, sb], m)
            torch.testing.assert_close(out[0:1], alone_a[i + 2], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out[1:2], alone_b[i], rtol=1e-5, atol=1e-5)


def test_reset_clears_state():
    model = _model(RGTPConfig(keep_tokens=20))
    v = _frames(3)
    s = StreamState()
    first = _run_stream(model, v, s)
    s.reset()
    again = _run_stream(model, v, s)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    assert s.t == 2 and s.cache_bytes() > 0


def test_random_selection_baseline_is_seeded():
    cfg = RGTPConfig(keep_tokens=20, selection="random", seed=3)
    model = _model(cfg)
    v = _frames(3)
    s1, s2 = StreamState(), StreamState()
    _run_stream(model, v, s1)
    _run_stream(model, v, s2)
    assert torch.equal(s1.kept, s2.kept)
    s3 = StreamState()
    _run_stream(_model(cfg.replace(seed=4)), v, s3)
    assert not torch.equal(s1.kept, s3.kept)


def test_bad_inputs_raise_clear_errors():
    model = _model(RGTPConfig(keep_tokens=100))  # N = 64
    with pytest.raises(ConfigError, match=r"keep_tokens=100.*N=64"):
        model(torch.randn(1, 3, 128, 128), [StreamState()])
    with pytest.raises(ConfigError, match="multiple of patch_size=16"):
        _model()(torch.randn(1, 3, 120, 128))
    padded = _model(pad_input=True)
    assert padded(torch.randn(1, 3, 120, 128))["last_feat"].shape == (1, 64, 8, 8)
    with pytest.raises(ConfigError, match="rollout_blocks"):
        _model(RGTPConfig(rollout_blocks=[9]))
    with pytest.raises(ValueError, match="2 stream states for a batch of 1"):
        model(torch.randn(1, 3, 128, 128), [StreamState(), StreamState()])


def test_full_size_vitb_counts_on_meta():
    with torch.device("meta"):
        model = PrunedViT(
            img_size=1024, rgtp=RGTPConfig(keep_ratio=0.097, rollout_mode="backward")
        ).eval()
        x = torch.empty(1, 3, 1024, 1024)
    state = StreamState()
    totals = []
    with torch.no_grad():
        for _ in range(2):
            with FlopCounter() as c:
                model(x, [state])
                model.update_heatmap(
                    [state], torch.zeros(1, 64, 64, dtype=torch.bool, device="meta")
                )
            totals.append((c.paper.total, c.executed.total))
    full, pruned = totals
    assert full[0] == full[1]  # full frames: executed == paper
    assert pruned[1] < pruned[0] < full[0]
    assert state.kept.shape == (397,)


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_fast_path_equals_straightforward_path_over_many_frames(mode):
    cfg = RGTPConfig(
        keep_tokens=12,
        reset_period=5,
        rollout_mode=mode,
        rollout_pool=2 if mode == "forward" else 1,
    )
    fast, ref = _model(cfg), _model(cfg, attention="explicit")
    frames = _frames(12, size=96, seed=5)
    sf, sr = StreamState(), StreamState()
    out_f = _run_stream(fast, frames, sf, anchors=[slice(1, 4), slice(2, 5)])
    out_r = _run_stream(ref, frames, sr, anchors=[slice(1, 4), slice(2, 5)])
    for a, b in zip(out_f, out_r):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sf.heatmap, sr.heatmap, rtol=1e-5, atol=1e-7)
    assert torch.equal(sf.kept, sr.kept)


def test_bfloat16_runs_and_keeps_buffers_in_model_dtype():
    model = _model(RGTPConfig(keep_tokens=20, rollout_pool=2)).to(torch.bfloat16)
    s = StreamState()
    outs = _run_stream(model, [f.to(torch.bfloat16) for f in _frames(3)], s)
    assert outs[-1].dtype == torch.bfloat16 and torch.isfinite(outs[-1].float()).all()
    assert all(t.dtype == torch.bfloat16 for t in s.attn.values())
    assert all(t.dtype == torch.bfloat16 for t in s.qkv.values())


def test_reset_frames_use_the_reset_pattern_when_not_processed_fully():
    # 8×8 grid, reset every 2nd frame with the 1in2 checkerboard: even rows keep even columns, odd rows odd ones
    cfg = RGTPConfig(keep_tokens=20, reset_period=2, full_on_reset=False, reset_pattern="1in2")
    model = _model(cfg)
    checkerboard = torch.tensor([y * 8 + x for y in range(8) for x in range(8) if (x + y) % 2 == 0])
    s = StreamState()
    kept, types = [], []
    with torch.no_grad():
        for f in _frames(5):
            model(f, [s])
            model.update_heatmap([s], torch.zeros(1, 8, 8, dtype=torch.bool))
            kept.append(s.kept)
            types.append(s.frame_type)
    assert types == [FrameType.FIRST] + [FrameType.PRUNED, FrameType.RESET] * 2
    assert kept[0] is None
    assert kept[1].numel() == 20
    assert torch.equal(kept[2], checkerboard) and torch.equal(kept[4], checkerboard)
    full = _model(cfg.replace(full_on_reset=True))
    s2 = StreamState()
    _run_stream(full, _frames(3), s2)
    assert s2.frame_type == FrameType.RESET and s2.kept is None


def test_settings_the_backbone_cannot_honour_are_rejected():
    with pytest.raises(ConfigError, match=r"first_frame_full=False.*PrunedViT"):
        _model(RGTPConfig(keep_tokens=20, first_frame_full=False))
    model = _model()
    with pytest.raises(ConfigError, match="first_frame_full"):
        model.rgtp = RGTPConfig(keep_tokens=20, first_frame_full=False)


def test_a_model_built_under_inference_mode_runs_a_stream():
    # its parameters are inference tensors, which have no version counter for the memo keys
    cfg = RGTPConfig(keep_tokens=20, reset_period=3)
    with torch.inference_mode():
        model = _model(cfg)
        assert model.pos_embed.is_inference()
        outs = _run_stream(model, _frames(4))
    ref = _run_stream(_model(cfg), _frames(4))
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
