"""How a rendered frame is laid out: the display scale of the panels, the caption bar below them, the anchor boxes
of the heatmap panel, and the kept-token count over the tokens that lie on the image.

Pure numpy / PIL on top of :mod:`rgtp.visualize`. The display scale never changes what the model sees: frames are
scaled for drawing only, and token geometries and boxes are scaled with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from rgtp import visualize as vis

__all__ = [
    "GAP",
    "MIN_SIDE",
    "Layout",
    "display_scale",
    "CaptionBar",
    "draw_dashed_boxes",
    "TokenCount",
    "token_count",
    "kept_caption",
]

#: Pixels between the two panels.
GAP = 4
#: Frames whose short side is below this are enlarged for display (by a whole factor, nearest neighbour, so token
#: cells stay sharp): a 16x16 or 176x144 input gets panels large enough for legible captions and box labels.
MIN_SIDE = 192
#: Caption font size in pixels: about 1/40 of the output width, within these bounds.
FONT_MIN, FONT_MAX = 12, 24


def display_scale(
    height: int, width: int, panels: int = 2, max_size: int = 0, min_side: int = MIN_SIDE
) -> float:
    """The factor by which frames of ``height x width`` are scaled for display.

    ``max_size`` (> 0) bounds the longer side of the panels together (``panels`` frames side by side, GAP pixels
    apart): larger frames are scaled down. Frames whose short side is below ``min_side`` are enlarged by the
    smallest whole factor that reaches it, unless that breaks ``max_size``. Otherwise 1.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")

    def longest(s: float) -> float:
        return max(panels * width * s + GAP * (panels - 1), height * s)

    scale = 1.0
    short = min(height, width)
    if min_side and short < min_side:
        scale = float(math.ceil(min_side / short))
    if max_size and max_size > 0 and longest(scale) > max_size:
        scale = min(scale, (max_size - GAP * (panels - 1)) / (panels * width), max_size / height)
        if scale >= 1:
            scale = float(math.floor(scale))  # a whole enlargement that fits
    return scale


@dataclass(frozen=True)
class Layout:
    """The display scale of one video's frames (1: as decoded)."""

    scale: float = 1.0

    def frame(self, image: np.ndarray) -> np.ndarray:
        """``image`` at display size (whole enlargements by pixel repetition, reductions with a box filter)."""
        s = self.scale
        if s == 1:
            return image
        h, w = image.shape[:2]
        if s > 1 and float(s).is_integer():
            k = int(s)
            return np.ascontiguousarray(np.repeat(np.repeat(image, k, axis=0), k, axis=1))
        size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
        resample = Image.Resampling.BOX if s < 1 else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(image).resize(size, resample=resample))

    def geometry(self, geometry: vis.TokenGeometry) -> vis.TokenGeometry:
        """``geometry`` (in frame pixels) in display pixels."""
        s = self.scale
        (ch, cw), (oy, ox) = geometry.cell, geometry.origin
        return vis.TokenGeometry(geometry.grid, (ch * s, cw * s), (oy * s, ox * s))

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy ``boxes`` in frame pixels, in display pixels."""
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * self.scale


class CaptionBar:
    """The caption bar below the panels: the font scales with the output width (about 1/40 of it, 12 to 24
    pixels); each caption line is wrapped at its `` | `` separators (then at spaces) to fit the width. The height is
    fixed by the first caption (wrapped with a 10% margin), so that every frame of a video has one size; a later
    caption that needs more lines ends with "…".
    """

    def __init__(
        self,
        width: int,
        font_size: Optional[int] = None,
        background: Tuple[int, int, int] = (24, 24, 24),
        color: Tuple[int, int, int] = (240, 240, 240),
    ) -> None:
        self.width = int(width)
        self.size = int(font_size or np.clip(round(width / 40), FONT_MIN, FONT_MAX))
        self.font = vis.get_font(self.size)
        self.line_h = int(round(self.size * 1.3))
        self.margin = max(2, self.size // 3)
        self.background = background
        self.color = color
        self.lines: Optional[int] = None
        self._measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def _fits(self, text: str, room: float) -> bool:
        return self._measure.textlength(text, font=self.font) <= room

    def wrap(self, lines: Sequence[str], room: Optional[float] = None) -> List[str]:
        """The physical lines of ``lines`` within ``room`` pixels (default: the bar width less its margins)."""
        room = (self.width - 2 * self.margin) if room is None else room
        out: List[str] = []
        for line in lines:
            current = ""
            for seg in line.split(" | "):
                joined = f"{current} | {seg}" if current else seg
                if self._fits(joined, room):
                    current = joined
                    continue
                if current:
                    out.append(current)
                current = ""
                for word in seg.split(" "):
                    joined = f"{current} {word}" if current else word
                    if self._fits(joined, room) or not current:
                        current = joined
                    else:
                        out.append(current)
                        current = word
            out.append(current)
        return out

    def render(self, lines: Sequence[str]) -> np.ndarray:
        """The bar image ``(height, width, 3)`` holding ``lines``."""
        if self.lines is None:
            self.lines = len(self.wrap(lines, 0.9 * (self.width - 2 * self.margin)))
        wrapped = self.wrap(lines)
        if len(wrapped) > self.lines:
            wrapped = wrapped[: self.lines]
            wrapped[-1] = wrapped[-1].rstrip() + " …"
        bar = Image.new(
            "RGB", (self.width, self.line_h * self.lines + self.size // 2), self.background
        )
        draw = ImageDraw.Draw(bar)
        for i, text in enumerate(wrapped):
            draw.text(
                (self.margin, self.size // 4 + i * self.line_h),
                text,
                fill=self.color,
                font=self.font,
            )
        return np.asarray(bar)

    def below(self, image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
        """``image`` with the bar holding ``lines`` appended below it."""
        if image.shape[1] != self.width:
            raise ValueError(f"the bar is {self.width} pixels wide, the image {image.shape[1]}")
        return np.concatenate([image, self.render(lines)], axis=0)


def draw_dashed_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    color: Tuple[int, int, int] = (255, 255, 255),
    width: Optional[int] = None,
) -> np.ndarray:
    """Draw xyxy ``boxes`` (display pixels) as dashed outlines, unlabelled: the rollout anchors, told apart from
    the solid, labelled detections."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return image.copy()
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    h, w = image.shape[:2]
    lw = width or max(1, round(min(h, w) / 200))
    dash = max(3, round(min(h, w) / 60))
    for x0, y0, x1, y1 in b.tolist():
        x0, x1 = max(0.0, x0), min(w - 1.0, x1)
        y0, y1 = max(0.0, y0), min(h - 1.0, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        for (ax, ay), (bx, by) in (
            ((x0, y0), (x1, y0)),
            ((x1, y0), (x1, y1)),
            ((x1, y1), (x0, y1)),
            ((x0, y1), (x0, y0)),
        ):
            length = math.hypot(bx - ax, by - ay)
            steps = max(1, int(length // dash))
            for k in range(0, steps, 2):
                t0, t1 = k / steps, min(1.0, (k + 1) / steps)
                draw.line(
                    [
                        (ax + (bx - ax) * t0, ay + (by - ay) * t0),
                        (ax + (bx - ax) * t1, ay + (by - ay) * t1),
                    ],
                    fill=color,
                    width=lw,
                )
    return np.asarray(pil).copy()


@dataclass(frozen=True)
class TokenCount:
    """Tokens of one frame: on the image and on the padding of the canvas, and how many of each were computed."""

    image: int
    padding: int
    kept_image: int
    kept_padding: int

    @property
    def total(self) -> int:
        return self.image + self.padding


_IMAGE_TOKENS: Dict[tuple, np.ndarray] = {}


def _image_tokens(geometry: vis.TokenGeometry, image_hw: Tuple[int, int]) -> np.ndarray:
    key = (geometry, tuple(image_hw))
    if key not in _IMAGE_TOKENS:
        idx = vis.token_index_map(geometry, image_hw)
        n = geometry.grid[0] * geometry.grid[1]
        mask = np.zeros(n, dtype=bool)
        mask[np.unique(idx[idx >= 0])] = True
        if len(_IMAGE_TOKENS) > 64:
            _IMAGE_TOKENS.clear()
        _IMAGE_TOKENS[key] = mask
    return _IMAGE_TOKENS[key]


def token_count(kept, geometry: vis.TokenGeometry, image_hw: Tuple[int, int]) -> TokenCount:
    """Count the tokens of the grid that cover a pixel of the ``image_hw`` frame (the others are padding of the
    canvas, e.g. below a 640x272 frame on a square canvas) and the ``kept`` ones among each (``None``: all).
    """
    on_image = _image_tokens(geometry, image_hw)
    mask = vis.kept_mask(kept, on_image.size)
    return TokenCount(
        image=int(on_image.sum()),
        padding=int((~on_image).sum()),
        kept_image=int((mask & on_image).sum()),
        kept_padding=int((mask & ~on_image).sum()),
    )


def kept_caption(count: TokenCount, full: bool) -> str:
    """``kept 40/112 image tokens (+ 24/144 padding)``; ``all 256 tokens`` on a full frame of a frame without
    padding."""
    if full:
        text = f"all {count.image} image tokens" if count.padding else f"all {count.image} tokens"
        return text + (f" (+ {count.padding} padding)" if count.padding else "")
    if not count.padding:
        return f"kept {count.kept_image}/{count.image} tokens"
    return f"kept {count.kept_image}/{count.image} image tokens (+ {count.kept_padding}/{count.padding} padding)"
