"""Resets at shot cuts (``cut_threshold``) and the change-based (Eventful-style) selection, in both models."""

from __future__ import annotations

import torch

from rgtp.cls_vit import ClsViT
from rgtp.config import RGTPConfig
from rgtp.selection import FrameType, change_scores
from rgtp.state import StreamState
from rgtp.tracking import match_previous, match_quality
from rgtp.vit import PrunedViT

ARCH = dict(
    img_size=128,
    patch_size=16,
    embed_dim=32,
    depth=3,
    num_heads=4,
    window_size=4,
    window_block_indexes=(0,),
    rel_pos_size=8,
    pretrain_img_size=128,
)
CUT = 6  # the frame where the shot changes


def _texture(seed: int, size: int = 160) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(1, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(img, size=(size, size), mode="bicubic")


def _video(frames: int = 12, size: int = 128) -> list[torch.Tensor]:
    """A texture panning 2 px per frame, then a hard cut to an unrelated texture at frame CUT."""
    a, b = _texture(1), _texture(2)
    return [
        (a if t < CUT else b)[..., :size, 2 * t : 2 * t + size].contiguous() for t in range(frames)
    ]


def _backbone(cfg: RGTPConfig) -> PrunedViT:
    torch.manual_seed(0)
    return PrunedViT(**ARCH, rgtp=cfg).eval()


def _run(model: PrunedViT, frames):
    s = StreamState()
    log = []
    with torch.no_grad():
        for f in frames:
            model(f, [s])
            model.update_heatmap([s], torch.zeros(1, 8, 8, dtype=torch.bool))
            log.append((s.frame_type, s.reset_cause, s.match_quality, s.kept))
    return log


def test_match_quality_is_the_mean_cosine_of_the_best_matches():
    emb = torch.randn(1, 4, 3)
    assert torch.allclose(
        match_quality(emb, emb, *match_previous(emb, emb, (2, 2), 0)), torch.ones(1)
    )
    q = match_quality(emb, -emb, *match_previous(emb, -emb, (2, 2), 0))
    assert torch.allclose(q, -torch.ones(1))
    # 1×2 grid by hand: token 0 = (1, 0) best matches previous token 0 = (1, 1) (dot 1 > 0): cosine 1/√2;
    # token 1 = (0, 1) ties between previous (1, 1) and (0, 1) (dot 1): the first offset wins, (1, 1): 1/√2
    cur = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    prev = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    src, sim = match_previous(cur, prev, (1, 2), 1)
    assert src.tolist() == [[0, 0]] and sim.tolist() == [[1.0, 1.0]]
    assert torch.allclose(match_quality(cur, prev, src, sim), torch.tensor([2**-0.5]))


def test_cut_aware_schedule_resets_on_the_cut_frame_only():
    frames = _video()
    base = RGTPConfig(keep_tokens=16, reset_period=100)
    off = _run(_backbone(base), frames)
    on = _run(_backbone(base.replace(cut_threshold=0.5)), frames)
    types_off = [t for t, *_ in off]
    assert types_off == [FrameType.FIRST] + [FrameType.PRUNED] * 11
    assert all(q is None for *_, q, _ in off)  # the check never runs when it is off
    types_on = [t for t, *_ in on]
    expected = [FrameType.FIRST] + [FrameType.PRUNED] * (CUT - 1) + [FrameType.RESET]
    assert types_on == expected + [FrameType.PRUNED] * (11 - CUT)
    assert on[CUT][1] == "cut" and on[CUT][3] is None  # processed fully
    qualities = [q for _, _, q, _ in on[1:]]
    assert qualities[CUT - 1] < 0.5 < min(qualities[: CUT - 1] + qualities[CUT:])
    # frames before the cut: the same kept tokens as without the check (the check reuses the tracking)
    for a, b in zip(off[1:CUT], on[1:CUT]):
        assert torch.equal(a[3], b[3])


def test_periodic_resets_report_their_cause():
    log = _run(_backbone(RGTPConfig(keep_tokens=16, reset_period=4)), _video(6))
    assert [(t, c) for t, c, *_ in log][4] == (FrameType.RESET, "period")
    assert log[1][1] is None


def test_cut_aware_recogniser_resets_with_its_pattern():
    torch.manual_seed(0)
    cfg = RGTPConfig(keep_tokens=10, reset_period=100, full_on_reset=False, reset_pattern="1in2")
    patch = torch.nn.Conv2d(3, 32, 16, stride=16)
    model = ClsViT((8, 8), embed_dim=32, depth=2, num_heads=4, rgtp=cfg.replace(cut_threshold=0.5))
    state = model.new_state()
    causes = []
    with torch.no_grad():
        for f in _video():
            emb = patch(f).flatten(2).transpose(1, 2)
            model(emb, state)
            causes.append((state.frame_type, state.reset_cause, state.kept_counts[-1]))
    assert causes[CUT] == (FrameType.RESET, "cut", 32)  # the 1in2 checkerboard of 8×8
    assert [c for _, c, _ in causes].count("cut") == 1


def test_change_scores_are_squared_distances():
    emb = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    computed = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert torch.equal(change_scores(emb, computed), torch.tensor([[0.0, 25.0]]))


def test_change_selection_keeps_the_tokens_that_changed_since_they_were_computed():
    torch.manual_seed(0)
    model = _backbone(RGTPConfig(keep_tokens=2, reset_period=100, selection="change"))
    a = _texture(3)[..., :128, :128].contiguous()
    b = a.clone()
    b[..., 16:32, 80:96] += 1.0  # token (1, 5) = 13
    b[..., 96:112, 16:32] -= 1.0  # token (6, 1) = 49
    c = b.clone()
    c[..., 0:16, 0:16] += 2.0  # token 0 changes on the next frame; 13 and 49 were computed on b
    log = _run(model, [a, b, c])
    assert log[1][3].tolist() == [13, 49]
    assert log[2][3][0].item() == 0 and 13 not in log[2][3].tolist()


class _HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the operators that make a CUDA device wait for the host to read a value (``item``, ``bool``, ``int``
    and ``tolist`` of one element go through ``_local_scalar_dense``; ``nonzero`` and ``masked_select`` need their
    output size), and ``Tensor.tolist`` calls (which read memory directly)."""

    SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_consecutive")

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in self.SYNCING:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def test_the_cut_check_reads_the_host_once_per_pruned_frame_and_not_when_off(monkeypatch):
    """The GPU path (``window_kept_only=False``: kept rows gathered from dense windows): a pruned frame has no
    host read with the cut check off and exactly one (the batch's match qualities) with it on."""
    frames = _video(5)
    lists = []
    tolist = torch.Tensor.tolist

    def counted_tolist(self):
        lists.append(tuple(self.shape))
        return tolist(self)

    for threshold, expected in ((None, []), (0.5, [(2,)])):
        cfg = RGTPConfig(keep_tokens=20, reset_period=8, cut_threshold=threshold)
        torch.manual_seed(0)
        # a windowed block after the first: the kept-query windows would need host reads
        model = PrunedViT(**dict(ARCH, window_block_indexes=(0, 2)), rgtp=cfg).eval()
        model.window_kept_only = False
        states = [StreamState(), StreamState()]
        with torch.no_grad():
            for t, f in enumerate(frames):
                batch = torch.cat([f, f.flip(-1)])
                if t == 0:
                    model(batch, states)
                    model.update_heatmap(states, torch.zeros(2, 8, 8, dtype=torch.bool))
                    continue
                lists.clear()
                monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
                with _HostReads() as reads:
                    model(batch, states)
                monkeypatch.setattr(torch.Tensor, "tolist", tolist)
                model.update_heatmap(states, torch.zeros(2, 8, 8, dtype=torch.bool))
                assert states[0].frame_type == FrameType.PRUNED
                assert reads.ops == [] and lists == expected, (threshold, t, reads.ops, lists)
