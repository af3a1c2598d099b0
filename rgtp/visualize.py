"""Drawing what RGTP keeps: rollout heatmap overlays, the kept-token grid with pruned cells dimmed, boxes and captions.

Pure numpy / PIL (torch tensors are accepted and converted); no detectron2. Every function takes and returns
``(H, W, 3)`` uint8 RGB images and never modifies its input.

Token maps are placed on the image by a :class:`TokenGeometry`: the token grid ``(gh, gw)``, the size of one token
cell in image pixels (floats: the model usually sees a resized frame) and the image position of the grid's top-left
corner. Pixels that no token covers (e.g. outside the centre crop of a recogniser view) are left untouched. The
geometry of a detector frame that was resized by ``s`` and zero-padded bottom/right to a square canvas is
``TokenGeometry(grid, (16 / s_h, 16 / s_w))``; the padded part of the canvas simply falls outside the image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "TokenGeometry",
    "to_numpy",
    "kept_mask",
    "token_index_map",
    "colorize",
    "overlay_heatmap",
    "draw_kept_grid",
    "draw_boxes",
    "add_caption",
    "hstack",
    "pad_to_even",
    "get_font",
]

logger = logging.getLogger(__name__)

# Anchor colours of a perceptually ordered dark-to-bright map (close to matplotlib's "inferno").
_INFERNO = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class TokenGeometry:
    """Where a token grid lies on an image.

    Attributes:
        grid: ``(gh, gw)`` tokens.
        cell: ``(cell_h, cell_w)`` size of one token in image pixels (may be fractional).
        origin: ``(y, x)`` image position of the grid's top-left corner (may be negative or fractional).
    """

    grid: Tuple[int, int]
    cell: Tuple[float, float]
    origin: Tuple[float, float] = (0.0, 0.0)

    @classmethod
    def covering(cls, grid: Tuple[int, int], image_hw: Tuple[int, int]) -> "TokenGeometry":
        """The grid stretched over the whole image."""
        return cls(grid, (image_hw[0] / grid[0], image_hw[1] / grid[1]))


def to_numpy(x: Any) -> np.ndarray:
    """A numpy copy of a numpy array or a (CPU or GPU, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.array(x)


def kept_mask(kept: Any, num_tokens: int) -> np.ndarray:
    """Boolean ``(num_tokens,)`` mask of the kept raster indices; ``kept=None`` (a full frame) keeps every token."""
    mask = np.zeros(num_tokens, dtype=bool)
    if kept is None:
        mask[:] = True
        return mask
    idx = to_numpy(kept).astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_tokens):
        raise ValueError(
            f"kept indices must lie in [0, {num_tokens}), got {idx.min()}..{idx.max()}"
        )
    mask[idx] = True
    return mask


def token_index_map(geometry: TokenGeometry, image_hw: Tuple[int, int]) -> np.ndarray:
    """``(H, W)`` int64 map from each image pixel to the raster index of the token covering it (−1: none)."""
    h, w = image_hw
    gh, gw = geometry.grid
    ch, cw = geometry.cell
    oy, ox = geometry.origin
    rows = np.floor((np.arange(h) + 0.5 - oy) / ch).astype(np.int64)
    cols = np.floor((np.arange(w) + 0.5 - ox) / cw).astype(np.int64)
    rv = (rows >= 0) & (rows < gh)
    cv = (cols >= 0) & (cols < gw)
    idx = rows[:, None] * gw + cols[None, :]
    return np.where(rv[:, None] & cv[None, :], idx, -1)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB colours (dark = unimportant, bright = important)."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(_INFERNO) - 1)
    lo = np.floor(v).astype(np.int64)
    hi = np.minimum(lo + 1, len(_INFERNO) - 1)
    frac = (v - lo)[..., None]
    return np.round(_INFERNO[lo] * (1 - frac) + _INFERNO[hi] * frac).astype(np.uint8)


def _as_image(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    return img


def overlay_heatmap(
    image: np.ndarray,
    heatmap: Any,
    geometry: TokenGeometry,
    alpha: float = 0.55,
    normalize: bool = True,
    gamma: float = 0.5,
) -> np.ndarray:
    """Blend the per-token ``heatmap`` (``(N,)`` or ``(gh, gw)``) over ``image`` with the inferno colour map.

    With ``normalize`` the heatmap is scaled to [0, 1] by its maximum over the tokens visible in the image;
    ``gamma`` < 1 brightens the small values that a rollout heatmap (which sums to one) mostly consists of.
    """
    img = _as_image(image)
    heat = to_numpy(heatmap).astype(np.float64).reshape(-1)
    gh, gw = geometry.grid
    if heat.size != gh * gw:
        raise ValueError(
            f"heatmap has {heat.size} values, the grid {geometry.grid} has {gh * gw} tokens"
        )
    idx = token_index_map(geometry, img.shape[:2])
    inside = idx >= 0
    if normalize:
        visible = np.unique(idx[inside])
        top = heat[visible].max() if visible.size else heat.max()
        lo = heat[visible].min() if visible.size else heat.min()
        heat = (heat - lo) / (top - lo) if top > lo else np.zeros_like(heat)
    heat = np.clip(heat, 0.0, 1.0) ** gamma
    colours = colorize(heat)[np.where(inside, idx, 0)]
    out = img.astype(np.float32)
    blend = (1 - alpha) * out + alpha * colours.astype(np.float32)
    out[inside] = blend[inside]
    return np.round(out).astype(np.uint8)


def draw_kept_grid(
    image: np.ndarray,
    kept: Any,
    geometry: TokenGeometry,
    dim: float = 0.3,
    line_color: Optional[Tuple[int, int, int]] = (0, 255, 128),
    line_alpha: float = 0.6,
) -> np.ndarray:
    """Dim the pixels of pruned token cells to ``dim`` of their brightness and outline the kept cells.

    ``kept`` are the raster indices of the kept tokens (``None``: a full frame, every cell kept). The outline is
    a one-pixel border along the edge of each kept cell, blended with ``line_alpha``; ``line_color=None`` draws none.
    """
    img = _as_image(image)
    gh, gw = geometry.grid
    mask = kept_mask(kept, gh * gw)
    idx = token_index_map(geometry, img.shape[:2])
    inside = idx >= 0
    kept_px = inside & mask[np.where(inside, idx, 0)]
    pruned_px = inside & ~kept_px
    out = img.astype(np.float32)
    out[pruned_px] *= dim
    if line_color is not None and not mask.all():
        # a kept pixel lies on a border when its right or lower neighbour belongs to another token
        border = np.zeros(idx.shape, dtype=bool)
        border[:, :-1] |= idx[:, :-1] != idx[:, 1:]
        border[:-1, :] |= idx[:-1, :] != idx[1:, :]
        border[:, 1:] |= idx[:, 1:] != idx[:, :-1]
        border[1:, :] |= idx[1:, :] != idx[:-1, :]
        sel = border & kept_px
        out[sel] = (1 - line_alpha) * out[sel] + line_alpha * np.asarray(line_color, np.float32)
    return np.round(out).astype(np.uint8)


def get_font(size: int) -> ImageFont.ImageFont:
    """A scalable font of ``size`` pixels (Pillow's bundled one), or the bitmap default where FreeType is missing."""
    try:
        return ImageFont.load_default(size=max(6, int(size)))
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def _palette(i: int) -> Tuple[int, int, int]:
    hues = [
        (255, 64, 64),
        (64, 160, 255),
        (255, 200, 0),
        (200, 80, 255),
        (0, 220, 120),
        (255, 128, 0),
        (0, 220, 220),
        (255, 96, 200),
    ]
    return hues[i % len(hues)]


def draw_boxes(
    image: np.ndarray,
    boxes: Any,
    labels: Optional[Sequence[str]] = None,
    classes: Optional[Sequence[int]] = None,
    width: Optional[int] = None,
) -> np.ndarray:
    """Draw ``(M, 4)`` xyxy boxes in image pixels with optional text labels (colour by class index)."""
    img = _as_image(image)
    b = to_numpy(boxes).reshape(-1, 4) if boxes is not None else np.zeros((0, 4))
    if len(b) == 0:
        return img.copy()
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    h, w = img.shape[:2]
    lw = width or max(1, round(min(h, w) / 150))
    font = get_font(max(8, min(h, w) // 22))
    cls = list(classes) if classes is not None else [0] * len(b)
    for i, (x0, y0, x1, y1) in enumerate(b.tolist()):
        color = _palette(int(cls[i]))
        draw.rectangle([x0, y0, x1, y1], outline=color, width=lw)
        if labels is not None and labels[i]:
            tb = draw.textbbox((0, 0), labels[i], font=font)
            tw, th = tb[2] - tb[0], tb[3] - tb[1]
            ty = y0 - th - 3 if y0 - th - 3 >= 0 else y0 + lw
            draw.rectangle([x0, ty, x0 + tw + 4, ty + th + 3], fill=color)
            draw.text((x0 + 2, ty - tb[1] + 1), labels[i], fill=(0, 0, 0), font=font)
    return np.asarray(pil).copy()


def add_caption(
    image: np.ndarray,
    lines: Sequence[str],
    font_size: Optional[int] = None,
    background: Tuple[int, int, int] = (24, 24, 24),
    color: Tuple[int, int, int] = (240, 240, 240),
) -> np.ndarray:
    """Append a caption bar below ``image`` with one text line per entry of ``lines``. The bar height depends only
    on the image width and the number of lines, so every frame of a video gets the same output size.
    """
    img = _as_image(image)
    h, w = img.shape[:2]
    size = font_size or int(np.clip(w / 45, 9, 26))
    font = get_font(size)
    line_h = int(round(size * 1.3))
    bar = Image.new("RGB", (w, line_h * len(lines) + size // 2), background)
    draw = ImageDraw.Draw(bar)
    for i, text in enumerate(lines):
        draw.text((max(2, size // 3), size // 4 + i * line_h), text, fill=color, font=font)
    return np.concatenate([img, np.asarray(bar)], axis=0)


def hstack(images: Sequence[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """Place equally tall images side by side with a ``gap``-pixel separator."""
    imgs = [_as_image(i) for i in images]
    h = imgs[0].shape[0]
    if any(i.shape[0] != h for i in imgs):
        raise ValueError(f"images must be equally tall, got heights {[i.shape[0] for i in imgs]}")
    sep = np.full((h, gap, 3), fill, dtype=np.uint8)
    parts = []
    for k, img in enumerate(imgs):
        if k:
            parts.append(sep)
        parts.append(img)
    return np.concatenate(parts, axis=1)


def pad_to_even(image: np.ndarray) -> np.ndarray:
    """Pad the bottom/right edge by one black pixel where height or width is odd (yuv420p video needs even sizes)."""
    img = _as_image(image)
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)))
