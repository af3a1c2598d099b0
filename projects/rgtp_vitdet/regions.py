"""The incremental detection head's building blocks: where a pruned frame changes a feature map, the exact
recomputation of a layer on those regions only, per-stream caches, and the head's FLOP counter.

On a pruned frame the backbone's output map equals the previous frame's everywhere but at the kept tokens (the
others come from its output cache), so every layer of the feature pyramid and of the RPN head changes only inside
the receptive field of the kept tokens. Changed regions are boolean masks per level (``(H, W)``, True where the
output may differ from the previous frame's). A layer is recomputed on rectangles: the changed output pixels are
covered by square tiles of ``tile`` pixels, runs of changed tiles in a tile row are merged with the identical runs
of the rows below into rectangles, rectangles are merged while that adds little unchanged area (:func:`rects`), and
the layer runs on each rectangle (with its halo, zero-padded at the map's border as the dense layer pads it) in one
call for every stream sharing that rectangle. Pointwise layers (1×1 convolutions, transposed convolutions whose
stride equals their kernel, channel LayerNorms, batch norms at inference, activations) run on the changed pixels'
vectors only, as matrix products. Everything else is the previous frame's output, reused.

Counted FLOPs (multiply-accumulates of convolutions and linear layers; the head is outside the paper's
backbone-only convention, so it has a counter of its own): ``dense`` is what the dense head executes on the frame,
``executed`` what ran.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from detectron2.layers.batch_norm import LayerNorm as ChannelLayerNorm
from torch import Tensor, nn

from rgtp.attention import version
from rgtp.autocast import autocast_dtype
from rgtp.counting import ScopedCounter

__all__ = [
    "DENSE_ABOVE",
    "TILE",
    "CachedHeadPart",
    "HeadFlopCounter",
    "autocast_state",
    "cache_key",
    "Rect",
    "StreamCaches",
    "charge_head",
    "conv_macs",
    "dilate",
    "downsample",
    "is_pointwise",
    "is_spatial_conv",
    "module_macs",
    "pointwise_on_rows",
    "rects",
    "roi_heads_macs",
    "run_on_rects",
    "token_masks",
    "upsample",
    "weights_signature",
]

#: A rectangle of output pixels ``(y0, y1, x0, x1)``, half-open.
Rect = Tuple[int, int, int, int]

#: Tile side (pixels of each level) of the changed regions, and the covered fraction of a map above which a
#: stream's layer is recomputed densely instead.
TILE = 8
DENSE_ABOVE = 0.9


# ---------------------------------------------------------------------------------------------------- FLOPs
class HeadFlopCounter(ScopedCounter):
    """Context manager tallying the detection head's multiply-accumulates: ``dense`` (what the dense head runs on
    these frames) and ``executed`` (what ran). Code of the head calls :func:`charge_head`."""

    _var: ClassVar[contextvars.ContextVar] = contextvars.ContextVar("rgtp_head_flops", default=None)

    def __init__(self) -> None:
        self.dense = 0
        self.executed = 0


_ACTIVE: contextvars.ContextVar[Optional[HeadFlopCounter]] = HeadFlopCounter._var


def charge_head(executed: int = 0, dense: int = 0) -> None:
    """Add MACs to the active :class:`HeadFlopCounter`, if any."""
    c = _ACTIVE.get()
    if c is not None:
        c.executed += int(executed)
        c.dense += int(dense)


def conv_macs(conv: nn.Module, out_numel: int, in_numel: int = 0) -> int:
    """MACs of a convolution producing ``out_numel`` outputs (a transposed one: consuming ``in_numel`` inputs)."""
    kh, kw = conv.kernel_size
    if isinstance(conv, nn.ConvTranspose2d):
        return in_numel * conv.out_channels * kh * kw // conv.groups
    return out_numel * conv.in_channels * kh * kw // conv.groups


def module_macs(m: nn.Module, shape: Tuple[int, ...]) -> Tuple[int, Tuple[int, ...]]:
    """MACs of ``m`` on an input of ``shape`` and its output shape (convolutions, linear layers and shape-keeping
    layers; sequences of them). Raises for anything else."""
    if isinstance(m, nn.Sequential):
        total = 0
        for sub in m:
            macs, shape = module_macs(sub, shape)
            total += macs
        return total, shape
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        n, _, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
        if isinstance(m, nn.ConvTranspose2d):
            oh, ow = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
        else:
            oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        out = (n, m.out_channels, oh, ow)
        return conv_macs(m, n * m.out_channels * oh * ow, n * m.in_channels * h * w), out
    if isinstance(m, nn.MaxPool2d):
        n, c, h, w = shape
        k, s = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
        return 0, (n, c, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)
    if isinstance(m, nn.Linear):
        rows = 1
        for d in shape[:-1]:
            rows *= d
        return rows * m.in_features * m.out_features, (*shape[:-1], m.out_features)
    if isinstance(m, nn.Flatten):
        n = shape[0]
        rest = 1
        for d in shape[1:]:
            rest *= d
        return 0, (n, rest)
    if isinstance(m, _POINTWISE):
        return 0, shape
    raise TypeError(f"no MAC count for {type(m).__name__}")


def _pair(v: Any) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ---------------------------------------------------------------------------------------------------- layers
#: Layers that act on each pixel alone (at inference: batch norms use their running statistics).
_POINTWISE = (
    ChannelLayerNorm,
    nn.BatchNorm2d,
    FrozenBatchNorm2d,
    nn.GELU,
    nn.ReLU,
    nn.Identity,
)


def is_pointwise(m: nn.Module) -> bool:
    """Whether each output pixel block of ``m`` depends on one input pixel: 1×1 convolutions, transposed
    convolutions with stride = kernel (no padding), channel LayerNorms and activations."""
    if isinstance(m, nn.ConvTranspose2d):
        return (
            tuple(m.kernel_size) == tuple(m.stride)
            and tuple(m.padding) == (0, 0)
            and tuple(m.output_padding) == (0, 0)
            and tuple(m.dilation) == (1, 1)
        )
    if isinstance(m, nn.Conv2d):
        return (
            tuple(m.kernel_size) == (1, 1)
            and tuple(m.stride) == (1, 1)
            and tuple(m.padding) == (0, 0)
            and _pointwise_extras(m)
        )
    return isinstance(m, _POINTWISE)


def _pointwise_extras(m: nn.Module) -> bool:
    """detectron2's Conv2d carries a norm and an activation: both must be pointwise too."""
    extras = [getattr(m, "norm", None), getattr(m, "activation", None)]
    return all(e is None or is_pointwise(e) for e in extras)


def is_spatial_conv(m: nn.Module) -> bool:
    """Whether ``m`` is a stride-1 k×k convolution (k odd) padded by k // 2, with pointwise norm/activation."""
    if not isinstance(m, nn.Conv2d):
        return False
    k = tuple(m.kernel_size)
    return (
        k[0] == k[1]
        and k[0] % 2 == 1
        and tuple(m.stride) == (1, 1)
        and tuple(m.dilation) == (1, 1)
        and tuple(m.padding) == (k[0] // 2, k[0] // 2)
        and m.padding_mode == "zeros"
        and _pointwise_extras(m)
    )


def upscale(m: nn.Module) -> int:
    """The upsampling factor of a pointwise layer (its stride for a transposed convolution, else 1)."""
    return int(m.stride[0]) if isinstance(m, nn.ConvTranspose2d) else 1


def pointwise_on_rows(layers: Sequence[nn.Module], rows: Tensor) -> Tensor:
    """Pointwise ``layers`` on pixel vectors ``rows`` (n, C): ``(n, C', s, s)`` with s the product of their
    upsampling factors (the block each input pixel becomes). Computed channels-last, each convolution as one
    matrix product (what the layer computes pixel by pixel; a transposed convolution on 1×1 inputs is slow).
    """
    x = rows[:, None, None, :]  # (n, a, a, C)
    for m in layers:
        x = _pointwise_channels_last(m, x)
    return x.permute(0, 3, 1, 2)


def _pointwise_channels_last(m: nn.Module, x: Tensor) -> Tensor:
    n, a, b, c = x.shape
    if isinstance(m, nn.ConvTranspose2d):
        s = int(m.stride[0])
        y = x.reshape(-1, c) @ m.weight.reshape(c, -1)  # (n·a·b, C'·s·s)
        charge_head(executed=y.numel() * c)
        y = y.view(n, a, b, m.out_channels, s, s).permute(0, 1, 4, 2, 5, 3)
        y = y.reshape(n, a * s, b * s, m.out_channels)
        return y + m.bias if m.bias is not None else y
    if isinstance(m, nn.Conv2d):  # 1×1, with detectron2's norm and activation
        y = x @ m.weight.reshape(m.out_channels, c).t()
        charge_head(executed=y.numel() * c)
        if m.bias is not None:
            y = y + m.bias
        for extra in (getattr(m, "norm", None), getattr(m, "activation", None)):
            if extra is not None:
                y = _pointwise_channels_last(extra, y)
        return y
    if isinstance(m, ChannelLayerNorm):
        return F.layer_norm(x, (c,), m.weight, m.bias, m.eps)
    if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):  # inference: the running statistics
        scale = m.weight * torch.rsqrt(m.running_var + m.eps)
        return x * scale + (m.bias - m.running_mean * scale)
    return m(x)  # elementwise activations


def run_on_rects(
    conv: nn.Module, maps: Sequence[Tensor], rect_lists: Sequence[Sequence[Rect]]
) -> Iterator[Tuple[Rect, List[int], Tensor]]:
    """A spatial convolution (:func:`is_spatial_conv`, with its norm and activation) on rectangles of the maps
    ``maps[i]`` (C, H, W): yields ``(rect, streams, out)`` with ``out`` (len(streams), C', h, w) the layer's
    output on ``rect`` for each stream listed (streams sharing a rectangle run as one batch)."""
    p = conv.padding[0]
    by_rect: Dict[Rect, List[int]] = {}
    for i, rs in enumerate(rect_lists):
        for r in rs:
            by_rect.setdefault(r, []).append(i)
    for rect, idx in by_rect.items():
        y0, y1, x0, x1 = rect
        h, w = maps[idx[0]].shape[-2:]
        sy0, sy1, sx0, sx1 = max(y0 - p, 0), min(y1 + p, h), max(x0 - p, 0), min(x1 + p, w)
        if len(idx) == 1:
            x = maps[idx[0]][None, :, sy0:sy1, sx0:sx1]
        else:
            x = torch.stack([maps[i][:, sy0:sy1, sx0:sx1] for i in idx])
        pad = (p - (x0 - sx0), p - (sx1 - x1), p - (y0 - sy0), p - (sy1 - y1))
        if any(pad):
            x = F.pad(x, pad)
        out = F.conv2d(x, conv.weight, conv.bias, 1, 0, 1, conv.groups)
        charge_head(executed=conv_macs(conv, out.numel()))
        norm, act = getattr(conv, "norm", None), getattr(conv, "activation", None)
        if norm is not None:
            out = norm(out)
        if act is not None:
            out = act(out)
        yield rect, idx, out


# ---------------------------------------------------------------------------------------------------- regions
def token_masks(kept: Sequence[Tensor], grid: Tuple[int, int], device: torch.device) -> Tensor:
    """``(B, h, w)`` masks of the kept tokens ``kept[i]`` (raster indices) on ``grid``."""
    h, w = grid
    m = torch.zeros(len(kept), h * w, dtype=torch.bool, device=device)
    for i, k in enumerate(kept):
        m[i, k] = True
    return m.view(len(kept), h, w)


def dilate(mask: Tensor, r: int) -> Tensor:
    """``mask`` (…, H, W) grown by ``r`` pixels in each direction (a (2r+1)² square)."""
    if r == 0:
        return mask
    shape = mask.shape
    m = mask.reshape(-1, 1, *shape[-2:]).float()
    return (F.max_pool2d(m, 2 * r + 1, 1, r) > 0).reshape(shape)


def upsample(mask: Tensor, s: int) -> Tensor:
    """Each pixel of ``mask`` (…, H, W) becomes an s×s block."""
    if s == 1:
        return mask
    return mask.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def downsample(mask: Tensor, s: int) -> Tensor:
    """``mask`` on the grid of an s×s max-pool (stride s, ceil): a pixel is set where any of its block is."""
    if s == 1:
        return mask
    shape = mask.shape
    m = mask.reshape(-1, 1, *shape[-2:]).float()
    out = F.max_pool2d(m, s, s, ceil_mode=True) > 0
    return out.reshape(*shape[:-2], *out.shape[-2:])


def rects(mask: Tensor, tile: int, waste: float = 0.1) -> Tuple[List[Rect], float]:
    """Disjoint rectangles covering the set pixels of ``mask`` (H, W), and the fraction of the map they cover.

    The map is cut into tiles of ``tile`` pixels; runs of changed tiles in a tile row, merged downwards with the
    identical runs of the rows below, cover exactly the changed tiles; then two rectangles are merged into their
    bounding box while that box meets no other rectangle and adds at most ``waste`` of its area in unchanged tiles
    (fewer calls per layer for a little more work).
    """
    h, w = mask.shape
    rows = downsample(mask, tile).tolist()
    boxes: List[List[int]] = []  # [y0, y1, x0, x1, changed tiles] in tiles
    open_runs: Dict[Tuple[int, int], int] = {}
    for ty, row in enumerate(rows + [[False] * (len(rows[0]) if rows else 0)]):
        runs = set()
        x = 0
        while x < len(row):
            if row[x]:
                x0 = x
                while x < len(row) and row[x]:
                    x += 1
                runs.add((x0, x))
            else:
                x += 1
        for run in [r for r in open_runs if r not in runs]:
            ty0 = open_runs.pop(run)
            boxes.append([ty0, ty, run[0], run[1], (ty - ty0) * (run[1] - run[0])])
        for run in runs:
            open_runs.setdefault(run, ty)
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        best = None
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                u = [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])]
                area = (u[1] - u[0]) * (u[3] - u[2])
                lost = area - a[4] - b[4]
                if lost > waste * area or (best is not None and lost >= best[0]):
                    continue
                if any(
                    k not in (i, j) and c[0] < u[1] and u[0] < c[1] and c[2] < u[3] and u[2] < c[3]
                    for k, c in enumerate(boxes)
                ):
                    continue
                best = (lost, i, j, u + [a[4] + b[4]])
        if best is not None:
            _, i, j, u = best
            boxes = [c for k, c in enumerate(boxes) if k not in (i, j)] + [u]
            merged = True
    out = [
        (y0 * tile, min(y1 * tile, h), x0 * tile, min(x1 * tile, w)) for y0, y1, x0, x1, _ in boxes
    ]
    covered = sum((r[1] - r[0]) * (r[3] - r[2]) for r in out)
    return out, covered / float(h * w)


# ---------------------------------------------------------------------------------------------------- caches
class StreamCaches:
    """Per-stream values in named slots (``"pyramid"``, ``"rpn"``), keyed by the identity of the stream's state
    object; a stream's entry goes when its state is garbage-collected (a stream the meta-architecture evicted or
    forgot) or with :meth:`pop`."""

    def __init__(self) -> None:
        self._entries: Dict[int, Tuple[weakref.ref, Dict[str, Any]]] = {}

    def _slots(self, state: object) -> Optional[Dict[str, Any]]:
        item = self._entries.get(id(state))
        if item is None or item[0]() is not state:
            return None
        return item[1]

    def get(self, state: object, slot: str) -> Any:
        """The value of ``slot`` for ``state`` (None when there is none)."""
        slots = self._slots(state)
        return None if slots is None else slots.get(slot)

    def set(self, state: object, slot: str, value: Any) -> None:
        slots = self._slots(state)
        if slots is None:
            key = id(state)
            entries = self._entries

            def forget(_ref: weakref.ref, key: int = key) -> None:
                item = entries.get(key)
                if item is not None and item[0] is _ref:
                    del entries[key]

            slots = {}
            self._entries[key] = (weakref.ref(state, forget), slots)
        slots[slot] = value

    def pop(self, state: object, slot: Optional[str] = None) -> None:
        """Forget ``slot`` of ``state`` (every slot: None)."""
        slots = self._slots(state)
        if slots is None:
            return
        if slot is None:
            del self._entries[id(state)]
        else:
            slots.pop(slot, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        """How many streams have an entry."""
        return len(self._entries)

    def nbytes(self, state: object, slot: Optional[str] = None) -> int:
        """Bytes of the tensors cached for ``state`` (in ``slot``; all slots: None)."""
        slots = self._slots(state)
        if slots is None:
            return 0
        return _nbytes(slots if slot is None else slots.get(slot))


class CachedHeadPart:
    """A part of the detection head (RPN, ROI heads) that wraps a detectron2 module without owning parameters and
    reuses, per stream, its previous-frame outputs where the pyramid reports nothing changed. Its cache is slot
    :attr:`slot` of the pyramid's per-stream store (``head_caches``), which the pyramid's full frames release.

    Args:
        module: the wrapped module.
        pyramid: the backbone that reports changed regions (``changed_regions(states)``), or None.
        enabled: reuse outputs (when :meth:`supported` and the pyramid is incremental); False runs ``module`` as is.
    """

    slot = ""

    def __init__(self, module: nn.Module, pyramid: Optional[nn.Module], enabled: bool) -> None:
        self.pyramid = pyramid
        self.enabled = (
            bool(enabled)
            and self.supported(module, pyramid)
            and bool(getattr(pyramid, "incremental", False))
        )
        self._caches = pyramid.head_caches if self.enabled else StreamCaches()

    @staticmethod
    def reports_changes(pyramid: Optional[nn.Module]) -> bool:
        """Whether ``pyramid`` reports changed regions and holds the per-stream store."""
        return hasattr(pyramid, "changed_regions") and hasattr(pyramid, "head_caches")

    @classmethod
    def supported(cls, module: nn.Module, pyramid: Optional[nn.Module]) -> bool:
        """Whether ``module`` has the structure the incremental path handles (subclasses)."""
        raise NotImplementedError

    def cache_bytes(self, state: object) -> int:
        """Bytes of this part's caches for one stream."""
        return self._caches.nbytes(state, self.slot)


def _nbytes(v: Any) -> int:
    if isinstance(v, Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, dict):
        return sum(_nbytes(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return sum(_nbytes(x) for x in v)
    if hasattr(v, "__dict__"):
        return sum(_nbytes(x) for x in vars(v).values())
    return 0


def autocast_state(device: torch.device) -> Tuple[bool, Optional[torch.dtype]]:
    """Whether autocast is on for ``device``'s type, and its dtype: caches computed under another are stale."""
    dtype = autocast_dtype(device)
    return dtype is not None, dtype


def cache_key(module: nn.Module, inputs: Sequence[Tensor]) -> Tuple[Any, ...]:
    """What a head part's cached outputs depend on besides the frames: ``module``'s weights, the inputs' shapes
    (batch aside), dtype and device, inference mode and autocast. A cache under another key is stale.
    """
    return (
        weights_signature(module),
        tuple(tuple(t.shape[1:]) for t in inputs),
        inputs[0].dtype,
        inputs[0].device,
        torch.is_inference_mode_enabled(),
        autocast_state(inputs[0].device),
    )


def weights_signature(module: nn.Module) -> Tuple[Any, ...]:
    """Identity and version of every parameter of ``module``: caches computed with other weights are stale."""
    return tuple((id(p), version(p)) for p in module.parameters())


def roi_heads_macs(roi_heads: nn.Module, channels: int, num_boxes: int) -> int:
    """MACs of a ``StandardROIHeads`` box branch (box head and predictor) on ``num_boxes`` proposals of
    ``channels``-channel features."""
    res = roi_heads.box_pooler.output_size
    res = (res, res) if isinstance(res, int) else tuple(res)
    macs, shape = module_macs(roi_heads.box_head, (num_boxes, channels, *res))
    shape = (shape[0], int(torch.tensor(shape[1:]).prod())) if len(shape) > 2 else shape
    pred = roi_heads.box_predictor
    for layer in (pred.cls_score, pred.bbox_pred):
        macs += module_macs(layer, shape)[0]
    return macs
