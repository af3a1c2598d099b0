"""An independent oracle for streaming ViTDet with Rollout-Guided Token Pruning.

:class:`ReferenceStream` re-implements, slowly and plainly (Python loops, float64), what ``rgtp.vit.PrunedViT``
does to a video stream: the dense ViTDet ViT (patch embedding, absolute position table, pre-LN blocks with
windowed or global attention and decomposed relative positions), the frame schedule (first / reset / pruned),
tracking of the previous heatmap by a local backward warp of raw patch embeddings, top-K selection, block-0
pruning with QKV and output caches, and the attention rollout (forward 2×2-pooled, forward and backward unpooled)
with its per-row attention buffers and the backward fallback to the previous heatmap.

It is written from the method description only and shares no code with ``rgtp``: the model under test is used
solely to draw parameters (read back from ``state_dict()``) and to be compared against. Every frame checks the
frame type, the kept index set, the dense feature map and the heatmap. The data (a smoothly drifting texture and
a moving bright square with hand-drawn anchor boxes, one frame without anchors) is checked to be discriminative:
tracking changes the top-K on some pruned frames and, pooled, some 2×2 query blocks hold no kept query (their
buffer rows must be carried over), so a model that skips tracking or forgets carried rows diverges from the oracle.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from rgtp.config import RGTPConfig
from rgtp.selection import FrameType
from rgtp.state import StreamState
from rgtp.vit import PrunedViT

PATCH = 16
EMBED = 64
DEPTH = 4
HEADS = 4
WINDOW = 4
WINDOW_BLOCKS = (0, 2)
KEEP = 20
RESET_PERIOD = 5
FRAMES = 14
EMPTY_MASK_FRAME = 7
LN_EPS = 1e-6


# ------------------------------------------------------------------------------------------------ plain maths
def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * weight + bias


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _softmax_rows(x: Tensor) -> Tensor:
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


class ReferenceStream:
    """One video stream through a plain float64 re-implementation of the pruned ViTDet backbone."""

    def __init__(
        self,
        model: PrunedViT,
        grid: Tuple[int, int],
        keep: int,
        reset_period: int,
        mode: str,
        pool: int,
    ) -> None:
        self.p = {k: v.detach().to(torch.float64).clone() for k, v in model.state_dict().items()}
        self.grid = grid
        self.n = grid[0] * grid[1]
        self.keep = keep
        self.reset_period = reset_period
        self.mode = mode
        self.pool = pool
        self.global_blocks = [i for i in range(DEPTH) if i not in WINDOW_BLOCKS]
        self.t = -1
        self.heat: Optional[Tensor] = None  # (N,) heatmap of the last frame
        self.embed: Optional[Tensor] = None  # (N, C) raw patch embeddings of the last frame
        self.qkv: Dict[int, Tensor] = {}  # block -> (N, 3C) QKV cache
        self.out: Optional[Tensor] = None  # (N, C) output cache
        self.buf: Dict[int, Tensor] = {}  # rollout block -> attention buffer
        self.kept: Optional[List[int]] = None
        self.fresh: Dict[int, Tensor] = (
            {}
        )  # rollout block -> fused probabilities of this frame's queries
        # evidence that the data exercises each part of the method
        self.tracking_changed_selection = 0
        self.pooled_rows_carried = 0
        self.backward_fallbacks = 0

    # -------------------------------------------------------------------------------------------- layers
    def _linear(self, x: Tensor, name: str) -> Tensor:
        return x @ self.p[name + ".weight"].t() + self.p[name + ".bias"]

    def patch_embed(self, img: Tensor) -> Tensor:
        """Raw patch embeddings (N, C) of one image (3, H, W): each patch flattened times the conv kernel."""
        h, w = self.grid
        weight = self.p["patch_embed.proj.weight"].reshape(EMBED, -1)
        patches = torch.stack(
            [
                img[:, y * PATCH : (y + 1) * PATCH, x * PATCH : (x + 1) * PATCH].reshape(-1)
                for y in range(h)
                for x in range(w)
            ]
        )
        return patches @ weight.t() + self.p["patch_embed.proj.bias"]

    def attend(
        self,
        i: int,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        qpos: List[Tuple[int, int]],
        kpos: List[Tuple[int, int]],
        size: int,
    ) -> Tuple[Tensor, Tensor]:
        """Multi-head attention with decomposed relative positions on a size×size attention grid.

        Returns the output (nq, C) and the probabilities (H, nq, m)."""
        rel_h = self.p[f"blocks.{i}.attn.rel_pos_h"]
        rel_w = self.p[f"blocks.{i}.attn.rel_pos_w"]
        e = (rel_h.shape[0] + 1) // 2
        assert e == size, "the reference does not resize relative tables"
        d = EMBED // HEADS
        scale = d**-0.5
        iy = torch.tensor([[qy - ky + e - 1 for ky, _ in kpos] for qy, _ in qpos])
        ix = torch.tensor([[qx - kx + e - 1 for _, kx in kpos] for _, qx in qpos])
        outs, probs = [], []
        for hd in range(HEADS):
            sl = slice(hd * d, (hd + 1) * d)
            qh, kh, vh = q[:, sl], k[:, sl], v[:, sl]
            logits = (qh * scale) @ kh.t()
            logits = logits + torch.einsum("nd,nmd->nm", qh, rel_h[iy])
            logits = logits + torch.einsum("nd,nmd->nm", qh, rel_w[ix])
            prob = _softmax_rows(logits)
            outs.append(prob @ vh)
            probs.append(prob)
        return torch.cat(outs, dim=1), torch.stack(probs)

    def window_attention(self, i: int, qkv: Tensor, queries: List[int]) -> Tensor:
        """Windowed attention of the tokens ``queries`` against the keys/values of their ws×ws windows, read from
        ``qkv`` (N, 3C); slots in the bottom/right padding hold the QKV of a zero (normed) token."""
        h, w = self.grid
        c = EMBED
        hp, wp = -(-h // WINDOW) * WINDOW, -(-w // WINDOW) * WINDOW
        pad = self._linear(torch.zeros(c, dtype=torch.float64), f"blocks.{i}.attn.qkv")
        out = torch.zeros(len(queries), c, dtype=torch.float64)
        for wy in range(hp // WINDOW):
            for wx in range(wp // WINDOW):
                rows, kpos = [], []
                for a in range(WINDOW):
                    for b in range(WINDOW):
                        y, x = wy * WINDOW + a, wx * WINDOW + b
                        rows.append(qkv[y * w + x] if y < h and x < w else pad)
                        kpos.append((a, b))
                kv = torch.stack(rows)
                sel = [
                    j
                    for j, tok in enumerate(queries)
                    if (tok // w) // WINDOW == wy and (tok % w) // WINDOW == wx
                ]
                if not sel:
                    continue
                toks = [queries[j] for j in sel]
                qpos = [((tok // w) % WINDOW, (tok % w) % WINDOW) for tok in toks]
                o, _ = self.attend(
                    i, qkv[toks, :c], kv[:, c : 2 * c], kv[:, 2 * c :], qpos, kpos, WINDOW
                )
                out[sel] = o
        return out

    def global_attention(self, i: int, qkv: Tensor, queries: List[int]) -> Tuple[Tensor, Tensor]:
        """Global attention of the tokens ``queries`` against all N keys/values of ``qkv`` (N, 3C); returns the
        output and the head-fused probabilities sqrt(mean_h P_h²) (nq, N)."""
        h, w = self.grid
        assert h == w, "the reference uses square grids"
        c = EMBED
        kpos = [(tok // w, tok % w) for tok in range(self.n)]
        qpos = [(tok // w, tok % w) for tok in queries]
        out, probs = self.attend(
            i, qkv[queries, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :], qpos, kpos, h
        )
        return out, torch.sqrt((probs**2).mean(dim=0))

    def attention(self, i: int, qkv: Tensor, queries: List[int]) -> Tensor:
        """Block i's attention output for ``queries``; stores fused probabilities of rollout blocks."""
        if i in WINDOW_BLOCKS:
            return self.window_attention(i, qkv, queries)
        out, fused = self.global_attention(i, qkv, queries)
        self.fresh[i] = fused
        return out

    def finish_block(self, i: int, x: Tensor, attn_out: Tensor) -> Tensor:
        """Projection + residual, then LN + MLP + residual."""
        x = x + self._linear(attn_out, f"blocks.{i}.attn.proj")
        hid = _layer_norm(x, self.p[f"blocks.{i}.norm2.weight"], self.p[f"blocks.{i}.norm2.bias"])
        hid = self._linear(_gelu(self._linear(hid, f"blocks.{i}.mlp.fc1")), f"blocks.{i}.mlp.fc2")
        return x + hid

    def qkv_of(self, i: int, x: Tensor) -> Tensor:
        """LN + QKV of block i."""
        hid = _layer_norm(x, self.p[f"blocks.{i}.norm1.weight"], self.p[f"blocks.{i}.norm1.bias"])
        return self._linear(hid, f"blocks.{i}.attn.qkv")

    # -------------------------------------------------------------------------------------------- streaming
    def frame_type(self) -> str:
        """first / reset / pruned for the current frame index."""
        if self.t == 0:
            return "first"
        return "reset" if self.t % self.reset_period == 0 else "pruned"

    def track(self, emb: Tensor) -> List[float]:
        """The previous heatmap backward-warped to this frame by 3×3 best matches of raw patch embeddings."""
        h, w = self.grid
        sim = (emb @ self.embed.t()).tolist()  # sim[p][q] = <E_t[p], E_{t-1}[q]>
        heat = self.heat.tolist()
        warped = []
        for y in range(h):
            for x in range(w):
                p = y * w + x
                best, best_sim = None, -math.inf
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if not (0 <= yy < h and 0 <= xx < w):
                            continue
                        s = sim[p][yy * w + xx]
                        if best is None or s > best_sim:  # strict: the first maximum wins ties
                            best, best_sim = yy * w + xx, s
                warped.append(heat[best])
        return warped

    def top_k(self, scores: List[float]) -> List[int]:
        """The K highest scores (ties to the lower index), raster-sorted."""
        order = sorted(range(self.n), key=lambda j: (-scores[j], j))
        return sorted(order[: self.keep])

    def forward(self, img: Tensor) -> Tuple[Tensor, str, Optional[List[int]]]:
        """Process the next frame (3, H, W); returns the feature map (C, h, w), the frame type, the kept set."""
        self.t += 1
        ftype = self.frame_type()
        emb = self.patch_embed(img.to(torch.float64))
        pos = self.p["pos_embed"][0, 1:]
        assert pos.shape[0] == self.n, "the reference does not resize the absolute table"
        x = emb + pos
        self.fresh = {}
        everyone = list(range(self.n))
        if ftype != "pruned":
            kept = None
            for i in range(DEPTH):
                qkv = self.qkv_of(i, x)
                self.qkv[i] = qkv
                x = self.finish_block(i, x, self.attention(i, qkv, everyone))
            out = x
        else:
            warped = self.track(emb)
            kept = self.top_k(warped)
            if kept != self.top_k(self.heat.tolist()):
                self.tracking_changed_selection += 1
            for i in range(DEPTH):
                if i == 0:
                    qkv = self.qkv_of(0, x)
                    attn_out = self.attention(0, qkv, everyone)[kept]
                    if 0 in self.fresh:
                        self.fresh[0] = self.fresh[0][kept]
                    x = x[kept]
                else:
                    cache = self.qkv[i].clone()
                    cache[kept] = self.qkv_of(i, x)
                    self.qkv[i] = cache
                    attn_out = self.attention(i, cache, kept)
                x = self.finish_block(i, x, attn_out)
            out = self.out.clone()
            out[kept] = x
        self.out = out
        self.embed = emb
        self.kept = kept
        h, w = self.grid
        return out.t().reshape(EMBED, h, w), ftype, kept

    # -------------------------------------------------------------------------------------------- rollout
    def _pool_keys(self, rows: Tensor) -> Tensor:
        """Sum the columns (keys, viewed as an h×w image) over 2×2 cells."""
        h, w = self.grid
        cols = []
        for cy in range(h // 2):
            for cx in range(w // 2):
                toks = [(2 * cy + a) * w + 2 * cx + b for a in range(2) for b in range(2)]
                cols.append(rows[:, toks].sum(dim=1))
        return torch.stack(cols, dim=1)

    def _cell_members(self, cell: int) -> List[int]:
        """The four tokens of pooled cell ``cell`` (raster order over the (h/2)×(w/2) grid)."""
        h, w = self.grid
        cy, cx = divmod(cell, w // 2)
        return [(2 * cy + a) * w + 2 * cx + b for a in range(2) for b in range(2)]

    def update_heatmap(self, mask: Tensor) -> Tensor:
        """Rollout of this frame's attention from the anchor mask (h, w) bool; returns and stores the heatmap."""
        h, w = self.grid
        pruned = self.kept is not None
        mats = []
        for i in self.global_blocks:
            fresh = self.fresh[i]  # rows: all tokens, or the kept ones in kept order
            if self.pool == 1:
                if not pruned:
                    buf = fresh.clone()
                else:
                    buf = self.buf[i].clone()
                    for j, tok in enumerate(self.kept):
                        buf[tok] = fresh[j]
            else:
                keyed = self._pool_keys(fresh)
                ncell = (h // 2) * (w // 2)
                if not pruned:
                    buf = torch.stack(
                        [keyed[self._cell_members(c)].mean(dim=0) for c in range(ncell)]
                    )
                else:
                    buf = self.buf[i].clone()
                    for c in range(ncell):
                        rows = [
                            j for j, tok in enumerate(self.kept) if tok in self._cell_members(c)
                        ]
                        if rows:
                            buf[c] = keyed[rows].sum(dim=0) / len(rows)
                        else:
                            self.pooled_rows_carried += 1
            self.buf[i] = buf
            a = (buf + torch.eye(buf.shape[0], dtype=buf.dtype)) / 2
            mats.append(a / a.sum(dim=1, keepdim=True))
        anchors = mask.to(torch.float64)
        if self.pool == 2:
            anchors = torch.tensor(
                [
                    [float(anchors[2 * cy : 2 * cy + 2, 2 * cx : 2 * cx + 2].mean() >= 0.5)]
                    for cy in range(h // 2)
                    for cx in range(w // 2)
                ],
                dtype=torch.float64,
            )
        anchors = anchors.reshape(-1)
        if anchors.sum() == 0:
            anchors = torch.ones_like(anchors)
        s0 = anchors / anchors.sum()
        if self.mode == "forward":
            r = torch.eye(mats[0].shape[0], dtype=torch.float64)
            for a in mats:
                r = a @ r
            imp = s0 @ r
            if self.pool == 2:
                img = imp.reshape(1, 1, h // 2, w // 2)
                imp = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
                imp = imp.reshape(-1)
        else:
            imp = s0
            for a in reversed(mats):
                imp = a.t() @ imp
            if pruned:  # positions of pruned tokens keep the previous (un-warped) heatmap
                fresh = imp
                imp = self.heat.clone()
                imp[self.kept] = fresh[self.kept]
                self.backward_fallbacks += self.n - len(self.kept)
        self.heat = imp / imp.sum()
        return self.heat


# ------------------------------------------------------------------------------------------------ data
def _video(size: int, frames: int, seed: int = 3) -> Tuple[List[Tensor], List[Tensor]]:
    """Frames (1, 3, size, size) of a smooth texture drifting a few pixels per frame with a bright square moving
    across it, and the hand-drawn anchor masks (grid bool) of a box around the square (empty on one frame).
    """
    g = torch.Generator().manual_seed(seed)
    margin = 48
    big = size + margin
    coarse = torch.randn(1, 3, big // 8, big // 8, generator=g)
    texture = F.interpolate(coarse, size=(big, big), mode="bilinear", align_corners=False)
    texture = texture + 0.3 * torch.randn(1, 3, big, big, generator=g)
    grid = size // PATCH
    side = 24
    imgs, masks = [], []
    for t in range(frames):
        dy, dx = 2 * t, 3 * t
        img = texture[:, :, dy : dy + size, dx : dx + size].clone()
        sy = 8 + round(t * (size - side - 16) / frames)
        sx = size - side - 8 - round(t * (size - side - 16) / (frames + 4))
        img[:, :, sy : sy + side, sx : sx + side] += 4.0
        imgs.append(img)
        mask = torch.zeros(grid, grid, dtype=torch.bool)
        if t != EMPTY_MASK_FRAME:
            y0, x0 = sy // PATCH, sx // PATCH
            y1, x1 = -(-(sy + side) // PATCH), -(-(sx + side) // PATCH)
            mask[y0:y1, x0:x1] = True
        masks.append(mask)
    return imgs, masks


def _model(size: int, cfg: RGTPConfig, attention: str, window_kept_only: bool) -> PrunedViT:
    """A small ViTDet with global and windowed blocks whose tables match the token grid (no resizing)."""
    torch.manual_seed(0)
    model = PrunedViT(
        img_size=size,
        patch_size=PATCH,
        embed_dim=EMBED,
        depth=DEPTH,
        num_heads=HEADS,
        window_size=WINDOW,
        window_block_indexes=WINDOW_BLOCKS,
        rel_pos_size=size // PATCH,
        pretrain_img_size=size,
        attention=attention,
        rgtp=cfg,
        window_kept_only=window_kept_only,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


MODES = {
    "forward-pool2": ("forward", 2),
    "forward-pool1": ("forward", 1),
    "backward": ("backward", 1),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only contend (on a loaded 2-core machine, 20× slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _assert_close(actual: Tensor, expected: Tensor, atol: float, what: str) -> None:
    torch.testing.assert_close(
        actual.double(), expected, rtol=1e-4, atol=atol, msg=lambda m: f"{what}: {m}"
    )


def _compare(size: int, mode: str, attention: str, window_kept_only: bool) -> ReferenceStream:
    rollout_mode, pool = MODES[mode]
    settings = dict(
        keep_tokens=KEEP, reset_period=RESET_PERIOD, rollout_mode=rollout_mode, rollout_pool=pool
    )
    if "behaviour" in {f.name for f in dataclasses.fields(RGTPConfig)}:
        # the rules the oracle implements: ties to the lower index, out-of-grid candidates excluded
        settings["behaviour"] = "clean"
    cfg = RGTPConfig(**settings)
    model = _model(size, cfg, attention, window_kept_only)
    grid = (size // PATCH, size // PATCH)
    ref = ReferenceStream(model, grid, KEEP, RESET_PERIOD, rollout_mode, pool)
    imgs, masks = _video(size, FRAMES)
    state = StreamState()
    feats = []
    types = []
    with torch.no_grad():
        for t, (img, mask) in enumerate(zip(imgs, masks)):
            feat = model(img, [state])["last_feat"]
            ref_feat, ref_type, ref_kept = ref.forward(img[0])
            types.append(ref_type)
            assert state.frame_type == FrameType(ref_type), f"frame {t}"
            if ref_kept is None:
                assert state.kept is None, f"frame {t}: a full frame has no kept set"
            else:
                assert state.kept is not None, f"frame {t}: a pruned frame has a kept set"
                assert state.kept.tolist() == ref_kept, f"frame {t}: kept sets differ"
            _assert_close(feat[0], ref_feat, 1e-4, f"frame {t}: feature map")
            feats.append((feat, ref_feat))
            heat = model.update_heatmap([state], mask.unsqueeze(0))
            ref_heat = ref.update_heatmap(mask)
            assert heat.shape == (1, ref.n) and state.heatmap.shape == (ref.n,)
            assert abs(float(state.heatmap.sum()) - 1.0) < 1e-5
            _assert_close(state.heatmap, ref_heat, 1e-6, f"frame {t}: heatmap")
    # earlier returned maps are not modified by later frames
    for t, (feat, ref_feat) in enumerate(feats):
        _assert_close(feat[0], ref_feat, 1e-4, f"frame {t}: feature map, re-read at the end")
    assert types.count("reset") >= 2 and types.count("pruned") >= 8
    return ref


@pytest.mark.parametrize("window_kept_only", [True, False], ids=["kept-only", "dense-window"])
@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize("mode", list(MODES))
def test_matches_reference_on_divisible_grid(mode, attention, window_kept_only):
    ref = _compare(128, mode, attention, window_kept_only)
    assert ref.tracking_changed_selection > 0
    if mode == "forward-pool2":
        assert ref.pooled_rows_carried > 0
    if mode == "backward":
        assert ref.backward_fallbacks > 0


@pytest.mark.parametrize("window_kept_only", [True, False], ids=["kept-only", "dense-window"])
@pytest.mark.parametrize("mode", ["forward-pool2", "backward"])
def test_matches_reference_on_padded_windows(mode, window_kept_only):
    """A 6×6 grid with 4×4 windows: the bottom/right windows are padded."""
    ref = _compare(96, mode, "sdpa", window_kept_only)
    assert ref.tracking_changed_selection > 0
