"""Procedural rendering for the embedded demo data (see ``docs/demo_data.md``).

Everything here is a pure function of a ``numpy.random.Generator``: textured backgrounds (multi-octave value noise
plus unlabeled clutter), four object classes drawn as textured sprites (airplane, car, turtle, sailboat, each with
its own silhouette and texture), and the scene generators used by :mod:`rgtp_apps.demo_data`:

* :func:`render_vid_snippet`: several objects that move, change scale, enter and leave the frame and occlude each
  other, over a panning background; returns the frames and per-frame boxes (amodal, clipped to the frame) with
  occlusion flags.
* :func:`render_cut_video`: several independent snippets (shots) joined by hard cuts, so that a video changes to an
  unrelated scene (other background, objects and camera) from one frame to the next; returns the frames and the
  cut frames.
* :func:`render_action_clip`: one object whose *motion over time* is the class (moving left / right, approaching /
  receding, moving up / down); appearance, facing, position and camera pan are drawn from the
  same distributions for every class, so that a single frame cannot tell the classes apart.

Only numpy (RNG and arrays) and Pillow (drawing, resampling) are used, so the output is deterministic for a given
seed and library build.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "ACTION_CLASSES",
    "OBJECT_CLASSES",
    "FrameObject",
    "ObjectClass",
    "SnippetFrame",
    "make_background",
    "make_sprite",
    "render_action_clip",
    "render_cut_video",
    "render_vid_snippet",
    "shot_lengths",
    "value_noise",
]


# --------------------------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------------------------


def value_noise(
    rng: np.random.Generator, h: int, w: int, octaves: Sequence[Tuple[float, float]]
) -> np.ndarray:
    """Smooth random field in [0, 1] of shape ``(h, w)``: the sum of bicubically upsampled random grids.

    ``octaves`` lists ``(cell size in pixels, weight)``; large cells give blotches, small cells give grain.
    """
    out = np.zeros((h, w), np.float32)
    for cell, weight in octaves:
        gh, gw = int(math.ceil(h / cell)) + 3, int(math.ceil(w / cell)) + 3
        grid = rng.random((gh, gw), dtype=np.float32)
        big = Image.fromarray(grid).resize(
            (int(round(gw * cell)), int(round(gh * cell))), Image.BICUBIC
        )
        ox, oy = int(cell), int(cell)  # skip the border cells, whose interpolation is one-sided
        out += weight * np.asarray(big, np.float32)[oy : oy + h, ox : ox + w]
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(
        colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32
    )


def _lerp_colors(t: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    return c0[None, None, :] * (1.0 - t[..., None]) + c1[None, None, :] * t[..., None]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


#: Background palettes (hue, saturation, value of the dark and light ends) so that scenes differ: grass, sand,
#: water, asphalt, forest floor, dusk sky.
_PALETTES: Tuple[Tuple[Tuple[float, float, float], Tuple[float, float, float]], ...] = (
    ((0.27, 0.55, 0.30), (0.22, 0.45, 0.70)),
    ((0.10, 0.35, 0.55), (0.12, 0.25, 0.90)),
    ((0.56, 0.60, 0.35), (0.52, 0.35, 0.85)),
    ((0.60, 0.05, 0.25), (0.60, 0.08, 0.65)),
    ((0.08, 0.50, 0.20), (0.18, 0.45, 0.55)),
    ((0.75, 0.30, 0.35), (0.05, 0.35, 0.85)),
)


def make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured ``(h, w, 3)`` uint8 world: a palette blend of value noise, fine grain, and unlabeled clutter
    (stones, bushes, stripes) so that "anything that is not smooth" is not a shortcut for "object".
    """
    pal = _PALETTES[int(rng.integers(len(_PALETTES)))]
    hue_shift = float(rng.uniform(-0.04, 0.04))
    c0 = _hsv(pal[0][0] + hue_shift, pal[0][1], pal[0][2])
    c1 = _hsv(pal[1][0] + hue_shift, pal[1][1], pal[1][2])
    base = value_noise(rng, h, w, ((float(rng.uniform(30, 60)), 0.65), (12.0, 0.25), (4.0, 0.10)))
    img = _lerp_colors(base, c0, c1)
    grain = value_noise(rng, h, w, ((2.0, 1.0),))
    img *= (0.95 + 0.10 * grain)[..., None]
    pil = Image.fromarray(_to_uint8(img))
    draw = ImageDraw.Draw(pil)
    area = h * w
    n_clutter = int(rng.integers(3, 7) * max(1, area // 40000))
    for _ in range(n_clutter):
        kind = int(rng.integers(3))
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        r = float(rng.uniform(4, 16))
        tone = c0 if rng.random() < 0.5 else c1
        col = tuple(int(v) for v in _to_uint8(np.clip(tone * rng.uniform(0.55, 1.35), 0, 1)))
        if kind == 0:  # stone: irregular polygon
            k = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.6, 1.0, k)
            pts = [(cx + a * math.cos(t), cy + 0.7 * a * math.sin(t)) for a, t in zip(rad, ang)]
            draw.polygon(pts, fill=col)
        elif kind == 1:  # bush: cluster of blobs
            for _ in range(int(rng.integers(3, 6))):
                dx, dy, rr = (
                    rng.uniform(-r, r),
                    rng.uniform(-r / 2, r / 2),
                    rng.uniform(r / 3, r / 1.5),
                )
                draw.ellipse((cx + dx - rr, cy + dy - rr, cx + dx + rr, cy + dy + rr), fill=col)
        else:  # stripe: a long thin band (path, fence, wave)
            x0 = float(rng.uniform(-w / 4, w))
            draw.line(
                [(x0, cy), (x0 + rng.uniform(w / 4, w / 2), cy + rng.uniform(-8, 8))],
                fill=col,
                width=int(rng.integers(1, 4)),
            )
    return np.asarray(pil, np.uint8)


# --------------------------------------------------------------------------------------------------------------
# Object sprites (canonical RGBA images, about 128 px wide; downscaled when placed)
# --------------------------------------------------------------------------------------------------------------


def _compose(texture: np.ndarray, mask: Image.Image) -> Image.Image:
    """RGBA sprite from a float ``(H, W, 3)`` texture in [0, 1] and an ``L`` mask."""
    rgba = np.dstack([_to_uint8(texture), np.asarray(mask, np.uint8)])
    return Image.fromarray(rgba)


def _vgrad(h: int, w: int, top: float, bottom: float) -> np.ndarray:
    return np.repeat(np.linspace(top, bottom, h, dtype=np.float32)[:, None], w, axis=1)


def _airplane(rng: np.random.Generator) -> Image.Image:
    """Side view: white/silver fuselage with a coloured cheat line, tail fin, wing, engine and a row of windows."""
    w, h = 128, 72
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    d.ellipse((2, 28, 126, 46), fill=255)
    d.polygon([(6, 37), (14, 4), (28, 4), (42, 32)], fill=255)  # tail fin
    d.polygon([(4, 38), (30, 38), (20, 46)], fill=255)  # stabiliser
    d.polygon([(52, 40), (82, 40), (62, 66), (50, 66)], fill=255)  # wing
    d.ellipse((60, 44, 80, 54), fill=255)  # engine
    base = _hsv(
        float(rng.uniform(0, 1)), float(rng.uniform(0.0, 0.12)), float(rng.uniform(0.82, 0.97))
    )
    tex = _vgrad(h, w, 1.05, 0.70)[..., None] * base[None, None, :]
    tex += 0.05 * np.sin(np.arange(w, dtype=np.float32) * 0.9)[None, :, None]  # panel lines
    stripe = _hsv(
        float(rng.uniform(0, 1)), float(rng.uniform(0.7, 1.0)), float(rng.uniform(0.45, 0.9))
    )
    tex[38:42, :, :] = stripe
    tex[4:30, 6:42, :] = 0.6 * tex[4:30, 6:42, :] + 0.4 * stripe  # tail livery
    tex[44:54, 60:80, :] *= 0.55  # engine shade
    win = Image.new("L", (w, h), 0)
    dw = ImageDraw.Draw(win)
    for x in range(44, 108, 6):
        dw.ellipse((x, 32, x + 3, 35), fill=255)
    dw.polygon([(112, 31), (121, 34), (118, 36), (111, 35)], fill=255)  # cockpit
    tex[np.asarray(win) > 0] = (0.12, 0.14, 0.2)
    return _compose(tex, mask)


def _car(rng: np.random.Generator) -> Image.Image:
    """Side view: glossy saturated body, cabin with glass, black wheels with grey hubs, head and tail lights."""
    w, h = 128, 66
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    d.rounded_rectangle((2, 24, 126, 52), radius=10, fill=255)
    d.polygon([(28, 26), (44, 4), (88, 4), (106, 26)], fill=255)
    d.ellipse((16, 38, 44, 65), fill=255)
    d.ellipse((84, 38, 112, 65), fill=255)
    base = _hsv(
        float(rng.uniform(0, 1)), float(rng.uniform(0.65, 1.0)), float(rng.uniform(0.55, 0.95))
    )
    tex = _vgrad(h, w, 1.25, 0.6)[..., None] * base[None, None, :]
    tex[27:29, 6:122, :] = np.minimum(1.0, base * 1.6)  # gloss line
    glass = Image.new("L", (w, h), 0)
    dg = ImageDraw.Draw(glass)
    dg.polygon([(34, 25), (47, 8), (64, 8), (64, 25)], fill=255)
    dg.polygon([(68, 25), (68, 8), (86, 8), (100, 25)], fill=255)
    g = np.asarray(glass) > 0
    tex[g] = (
        _vgrad(h, w, 0.95, 0.55)[g][:, None] * np.asarray((0.55, 0.75, 0.95), np.float32)[None, :]
    )
    wheels = Image.new("L", (w, h), 0)
    dwh = ImageDraw.Draw(wheels)
    for cx in (30, 98):
        dwh.ellipse((cx - 14, 38, cx + 14, 65), fill=255)
        dwh.ellipse((cx - 6, 45, cx + 6, 57), fill=128)
    wv = np.asarray(wheels)
    tex[wv == 255] = (0.05, 0.05, 0.06)
    tex[wv == 128] = (0.65, 0.66, 0.7)
    tex[30:35, 119:126, :] = (1.0, 0.95, 0.55)  # head light
    tex[30:35, 3:8, :] = (0.85, 0.1, 0.1)  # tail light
    return _compose(tex, mask)


def _turtle(rng: np.random.Generator) -> Image.Image:
    """Top view: a shell of Voronoi plates (dark seams, per-plate shade), head, four legs and a tail."""
    w, h = 128, 100
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    for bx, by in ((22, 6), (82, 6), (22, 78), (82, 78)):
        d.ellipse((bx, by, bx + 22, by + 16), fill=255)
    d.ellipse((100, 36, 127, 64), fill=255)  # head
    d.polygon([(0, 50), (16, 44), (16, 56)], fill=255)  # tail
    skin_h = float(rng.uniform(0.18, 0.30))
    skin = _hsv(skin_h, float(rng.uniform(0.35, 0.6)), float(rng.uniform(0.45, 0.7)))
    spots = value_noise(rng, h, w, ((5.0, 1.0),))
    tex = skin[None, None, :] * (0.75 + 0.5 * spots)[..., None]
    shell = Image.new("L", (w, h), 0)
    ImageDraw.Draw(shell).ellipse((12, 12, 108, 88), fill=255)
    mask.paste(255, (0, 0), shell)
    n = 13
    seeds = np.stack([rng.uniform(16, 104, n), rng.uniform(16, 84, n)], 1).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = (xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2
    part = np.partition(dist, 1, axis=-1)
    nearest = np.argmin(dist, axis=-1)
    seam = np.sqrt(part[..., 1]) - np.sqrt(part[..., 0]) < 2.2
    plate_h = float(rng.uniform(0.06, 0.16))
    shades = rng.uniform(0.55, 1.0, n).astype(np.float32)
    plate = _hsv(plate_h, float(rng.uniform(0.55, 0.85)), float(rng.uniform(0.5, 0.75)))
    radial = 1.1 - 0.5 * np.sqrt(((xx - 60) / 48) ** 2 + ((yy - 50) / 38) ** 2)
    shell_tex = plate[None, None, :] * (shades[nearest] * radial)[..., None]
    shell_tex[seam] = (0.12, 0.10, 0.05)
    s = np.asarray(shell) > 0
    tex[s] = shell_tex[s]
    tex[46:50, 118:121, :] = (0.02, 0.02, 0.02)  # eye
    return _compose(tex, mask)


def _sailboat(rng: np.random.Generator) -> Image.Image:
    """Sailboat: wooden hull with planks, mast, a striped main sail and a coloured jib."""
    w, h = 112, 128
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    d.polygon([(2, 96), (110, 96), (94, 126), (16, 126)], fill=255)  # hull
    d.rectangle((53, 4, 57, 98), fill=255)  # mast
    d.polygon([(51, 8), (51, 92), (8, 92)], fill=255)  # main sail
    d.polygon([(59, 16), (59, 92), (100, 92)], fill=255)  # jib
    wood = _hsv(
        float(rng.uniform(0.05, 0.1)), float(rng.uniform(0.5, 0.75)), float(rng.uniform(0.3, 0.55))
    )
    tex = np.empty((h, w, 3), np.float32)
    planks = 0.8 + 0.2 * ((np.arange(h) // 5) % 2).astype(np.float32)
    tex[:] = wood[None, None, :] * planks[:, None, None]
    tex[4:99, 53:58, :] = wood * 0.6
    cloth = _hsv(
        float(rng.uniform(0.1, 0.16)), float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.88, 1.0))
    )
    stripe = _hsv(
        float(rng.uniform(0, 1)), float(rng.uniform(0.7, 1.0)), float(rng.uniform(0.5, 0.95))
    )
    main = Image.new("L", (w, h), 0)
    ImageDraw.Draw(main).polygon([(51, 8), (51, 92), (8, 92)], fill=255)
    jib = Image.new("L", (w, h), 0)
    ImageDraw.Draw(jib).polygon([(59, 16), (59, 92), (100, 92)], fill=255)
    m, j = np.asarray(main) > 0, np.asarray(jib) > 0
    rows = np.arange(h)[:, None].repeat(w, 1)
    sail = np.where(((rows // 9) % 3 == 0)[..., None], stripe[None, None, :], cloth[None, None, :])
    sail = sail * _vgrad(h, w, 0.85, 1.05)[..., None]
    tex[m] = sail[m]
    tex[j] = (stripe * 0.8 + 0.2)[None, :] * _vgrad(h, w, 0.8, 1.0)[j][:, None]
    return _compose(tex, mask)


@dataclass(frozen=True)
class ObjectClass:
    """One demo object class: its ImageNet VID WordNet id and name, and the sprite renderer."""

    wnid: str
    name: str
    render: Callable[[np.random.Generator], Image.Image]


#: The detection classes: four of the 30 ImageNet VID classes, with their real WordNet ids.
OBJECT_CLASSES: Tuple[ObjectClass, ...] = (
    ObjectClass("n02691156", "airplane", _airplane),
    ObjectClass("n02958343", "car", _car),
    ObjectClass("n01662784", "turtle", _turtle),
    ObjectClass("n04530566", "watercraft", _sailboat),
)


def make_sprite(rng: np.random.Generator, cls: int) -> Image.Image:
    """A fresh RGBA instance of object class ``cls`` (colours and details drawn from ``rng``)."""
    return OBJECT_CLASSES[cls].render(rng)


# --------------------------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------------------------


def _resized(
    sprite: Image.Image, width: float, angle: float = 0.0, mirror: bool = False
) -> Image.Image:
    sw, sh = sprite.size
    nw = max(2, int(round(width)))
    nh = max(2, int(round(width * sh / sw)))
    out = sprite.resize((nw, nh), Image.BILINEAR, reducing_gap=2.0)
    if mirror:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    if angle:
        out = out.rotate(angle, resample=Image.BICUBIC, expand=True)
    return out


def _paste(frame: Image.Image, sprite: Image.Image, cx: float, cy: float) -> Tuple[int, int]:
    """Alpha-paste ``sprite`` centred at (cx, cy) (parts outside the frame are clipped); returns its top-left."""
    x0 = int(round(cx - sprite.width / 2))
    y0 = int(round(cy - sprite.height / 2))
    frame.paste(sprite, (x0, y0), sprite)
    return x0, y0


@dataclass
class FrameObject:
    """One annotated object in one frame: track id, class index, box (inclusive pixel coordinates, clipped to the
    frame), occlusion flag and the fractions used to decide them."""

    trackid: int
    cls: int
    box: Tuple[int, int, int, int]  # xmin, ymin, xmax, ymax (inclusive)
    occluded: bool
    visible_fraction: float  # visible pixels / all pixels of the object (in and out of frame)
    truncated: bool  # part of the object lies outside the frame


@dataclass
class SnippetFrame:
    """A rendered detection frame and its annotations."""

    image: np.ndarray  # (H, W, 3) uint8
    objects: List[FrameObject] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Detection snippets
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Track:
    cls: int
    sprite: Image.Image
    mirror: bool
    mid: np.ndarray  # position at the middle frame (image coordinates)
    vel: np.ndarray  # image-plane velocity (object velocity minus camera velocity), px / frame
    w0: float
    w1: float
    wobble: Tuple[float, float, float]  # amplitude, period, phase of a vertical bob

    def at(self, t: int, n: int) -> Tuple[float, float, float]:
        a = t / max(n - 1, 1)
        width = self.w0 * (self.w1 / self.w0) ** a
        amp, period, phase = self.wobble
        c = self.mid + self.vel * (t - (n - 1) / 2)
        return float(c[0]), float(c[1] + amp * math.sin(2 * math.pi * t / period + phase)), width


#: Annotation rules: an object is annotated when at least this fraction of its pixels (counting the ones outside
#: the frame) is visible and at least ``_MIN_VISIBLE_PX`` pixels are; it is flagged occluded when more than
#: ``_OCCLUDED_FRACTION`` of its in-frame pixels are covered by objects in front.
_MIN_VISIBLE_FRACTION = 0.2
_MIN_VISIBLE_PX = 40
_OCCLUDED_FRACTION = 0.15
_MIN_BOX_SIDE = 4


def _random_velocity(
    rng: np.random.Generator, lo: float, hi: float, max_slope: float = 0.5
) -> np.ndarray:
    """A velocity of speed in [lo, hi] px/frame, mostly horizontal (|vy| <= max_slope * |vx|-ish)."""
    speed = float(rng.uniform(lo, hi))
    ang = float(rng.uniform(0, 2 * np.pi))
    return np.asarray([speed * math.cos(ang), max_slope * speed * math.sin(ang)], np.float32)


def _sample_tracks(
    rng: np.random.Generator,
    n_obj: int,
    first_cls: int,
    w: int,
    h: int,
    n: int,
    cam_vel: np.ndarray,
) -> List[_Track]:
    tracks: List[_Track] = []
    for k in range(n_obj):
        cls = first_cls if k == 0 else int(rng.integers(len(OBJECT_CLASSES)))
        sprite = make_sprite(rng, cls)
        w0, w1 = (float(x) for x in rng.uniform(24, 80, 2))
        if rng.random() < 0.3:  # some objects keep their scale
            w1 = w0 * float(rng.uniform(0.9, 1.1))
        r = rng.random()
        if k > 0 and r < 0.45:
            # Cross paths with an earlier object around the middle of the snippet: occlusion.
            other = tracks[int(rng.integers(len(tracks)))]
            off = rng.uniform(-0.35, 0.35, 2) * np.asarray([other.w0, 0.6 * other.w0])
            mid = other.mid + off.astype(np.float32)
            vel = _random_velocity(rng, 0.3, 4.5) - cam_vel
        elif r < 0.75:
            # Enter or leave the frame through its left or right edge within the snippet.
            vel = _random_velocity(rng, 2.5, 5.0, max_slope=0.3)
            half = 0.5 * (n - 1)
            margin = float(rng.uniform(0.0, 8.0))
            if rng.random() < 0.5:  # enter: just outside at the first frame
                edge = -0.5 * w0 - margin if vel[0] > 0 else w + 0.5 * w0 + margin
                mid = np.asarray([edge + vel[0] * half, rng.uniform(0.2, 0.8) * h], np.float32)
            else:  # leave: just outside at the last frame
                edge = w + 0.5 * w1 + margin if vel[0] > 0 else -0.5 * w1 - margin
                mid = np.asarray([edge - vel[0] * half, rng.uniform(0.2, 0.8) * h], np.float32)
        else:
            mid = np.asarray([rng.uniform(0.1, 0.9) * w, rng.uniform(0.15, 0.85) * h], np.float32)
            vel = _random_velocity(rng, 0.3, 4.5) - cam_vel
        wobble = (
            float(rng.uniform(0, 3)),
            float(rng.uniform(8, 20)),
            float(rng.uniform(0, 2 * np.pi)),
        )
        mirror = bool(vel[0] + cam_vel[0] < 0)  # objects face the way they move in the world
        tracks.append(_Track(cls, sprite, mirror, mid, vel.astype(np.float32), w0, w1, wobble))
    return tracks


def _panning_world(
    rng: np.random.Generator, height: int, width: int, n_frames: int, cam_vel: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """A background large enough for a ``height`` x ``width`` camera panning at ``cam_vel`` px/frame for
    ``n_frames`` frames, and the camera's top-left corner at frame 0 (frame t starts at ``cam0 + cam_vel * t``).
    """
    pad_x = int(math.ceil(abs(cam_vel[0]) * n_frames)) + 2
    pad_y = int(math.ceil(abs(cam_vel[1]) * n_frames)) + 2
    world = make_background(rng, height + pad_y, width + pad_x)
    cam0 = np.asarray(
        [pad_x - 1 if cam_vel[0] < 0 else 0, pad_y - 1 if cam_vel[1] < 0 else 0], np.float32
    )
    return world, cam0


def render_vid_snippet(
    rng: np.random.Generator, n_frames: int, width: int, height: int, first_cls: int
) -> List[SnippetFrame]:
    """Render one detection snippet of ``n_frames`` frames of ``width`` x ``height``.

    1 to 3 objects (the first of class ``first_cls`` and visible in most frames, the others random) with independent speed, direction and
    scale change, over a background panning at its own speed; their paths are often made to cross so that they
    occlude each other. Boxes are the amodal extent of each object clipped to the frame, in inclusive pixel
    coordinates as in ILSVRC; objects that are mostly hidden or outside the frame are not annotated.
    """
    n_obj = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    cam_vel = np.asarray([rng.uniform(-2.5, 2.5), rng.uniform(-0.8, 0.8)], np.float32)
    world, cam0 = _panning_world(rng, height, width, n_frames, cam_vel)
    tracks: List[_Track] = []
    for _attempt in range(20):
        tracks = _sample_tracks(rng, n_obj, first_cls, width, height, n_frames, cam_vel)
        frames = _draw_snippet(world, tracks, cam0, cam_vel, n_frames, width, height)
        with_any = sum(1 for f in frames if f.objects)
        with_first = sum(1 for f in frames if any(o.trackid == 0 for o in f.objects))
        if with_any >= 0.7 * n_frames and with_first >= 0.6 * n_frames:
            return frames
    return frames  # pragma: no cover - 20 rejections in a row do not happen with these ranges


def _draw_snippet(
    world: np.ndarray,
    tracks: List[_Track],
    cam0: np.ndarray,
    cam_vel: np.ndarray,
    n: int,
    w: int,
    h: int,
) -> List[SnippetFrame]:
    order = list(range(len(tracks)))  # back to front: list order
    frames: List[SnippetFrame] = []
    for t in range(n):
        cx, cy = (int(round(v)) for v in cam0 + cam_vel * t)
        frame = Image.fromarray(world[cy : cy + h, cx : cx + w])
        owner = np.full((h, w), -1, np.int16)
        full_px: Dict[int, int] = {}
        in_frame: Dict[int, int] = {}
        extent: Dict[int, Tuple[int, int, int, int]] = {}
        for k in order:
            tr = tracks[k]
            x, y, width = tr.at(t, n)
            sp = _resized(tr.sprite, width, mirror=tr.mirror)
            x0, y0 = _paste(frame, sp, x, y)
            alpha = np.asarray(sp.getchannel("A")) >= 128
            ys, xs = np.nonzero(alpha)
            full_px[k] = int(alpha.sum())
            if full_px[k] == 0:
                continue
            extent[k] = (
                x0 + int(xs.min()),
                y0 + int(ys.min()),
                x0 + int(xs.max()),
                y0 + int(ys.max()),
            )
            # In-frame part of the mask goes into the owner map (later objects are in front).
            fx0, fy0 = max(x0, 0), max(y0, 0)
            fx1, fy1 = min(x0 + sp.width, w), min(y0 + sp.height, h)
            in_frame[k] = 0
            if fx1 > fx0 and fy1 > fy0:
                sub = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
                owner[fy0:fy1, fx0:fx1][sub] = k
                in_frame[k] = int(sub.sum())
        # Pixels still owned by an object after all are drawn are the visible ones.
        counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(tracks))
        objs: List[FrameObject] = []
        for k in order:
            if k not in extent:
                continue
            tr = tracks[k]
            ex0, ey0, ex1, ey1 = extent[k]
            bx0, by0, bx1, by1 = max(ex0, 0), max(ey0, 0), min(ex1, w - 1), min(ey1, h - 1)
            if bx1 - bx0 + 1 < _MIN_BOX_SIDE or by1 - by0 + 1 < _MIN_BOX_SIDE:
                continue
            visible = int(counts[k])
            if visible < _MIN_VISIBLE_PX or visible < _MIN_VISIBLE_FRACTION * full_px[k]:
                continue
            covered = max(in_frame[k] - visible, 0) / max(in_frame[k], 1)
            objs.append(
                FrameObject(
                    trackid=k,
                    cls=tr.cls,
                    box=(bx0, by0, bx1, by1),
                    occluded=covered > _OCCLUDED_FRACTION,
                    visible_fraction=visible / full_px[k],
                    truncated=(ex0 < 0 or ey0 < 0 or ex1 > w - 1 or ey1 > h - 1),
                )
            )
        frames.append(SnippetFrame(np.asarray(frame, np.uint8).copy(), objs))
    return frames


# --------------------------------------------------------------------------------------------------------------
# Detection videos with shot cuts
# --------------------------------------------------------------------------------------------------------------

#: Track ids of shot k of a cut video are the shot's own ids plus k * CUT_TRACK_STRIDE (a shot has at most 3
#: objects), so that objects of different shots are different tracks.
CUT_TRACK_STRIDE = 10


def shot_lengths(
    rng: np.random.Generator, n_frames: int, min_shot: int, max_shot: int
) -> List[int]:
    """Shot lengths drawn uniformly in [``min_shot``, ``max_shot``] until they cover ``n_frames``; the last shot is
    cut to fit, and merged into the one before when that leaves it shorter than ``min_shot``."""
    if not 1 <= min_shot <= max_shot:
        raise ValueError(
            f"shot lengths: need 1 <= min_shot <= max_shot, got {min_shot}, {max_shot}"
        )
    lengths: List[int] = []
    while sum(lengths) < n_frames:
        lengths.append(int(rng.integers(min_shot, max_shot + 1)))
    lengths[-1] -= sum(lengths) - n_frames
    if len(lengths) > 1 and lengths[-1] < min_shot:
        last = lengths.pop()
        lengths[-1] += last
    return lengths


def render_cut_video(
    rng: np.random.Generator,
    n_frames: int,
    width: int,
    height: int,
    first_cls: int,
    min_shot: int,
    max_shot: int,
) -> Tuple[List[SnippetFrame], List[int]]:
    """Render one detection video of ``n_frames`` frames made of shots joined by hard cuts.

    Shot lengths come from :func:`shot_lengths`; every shot is an independent :func:`render_vid_snippet` with its own
    generator (its own background world and palette draw, objects and camera pan), its first object of class
    ``(first_cls + k) % 4`` for shot k, and its track ids offset by ``k * CUT_TRACK_STRIDE``. Returns the frames and
    the cut frames: the index of the first frame of every shot after the first.
    """
    lengths = shot_lengths(rng, n_frames, min_shot, max_shot)
    seeds = rng.integers(0, 2**32, size=len(lengths))
    frames: List[SnippetFrame] = []
    cuts: List[int] = []
    for k, (n, seed) in enumerate(zip(lengths, seeds)):
        if k:
            cuts.append(len(frames))
        shot = render_vid_snippet(
            np.random.default_rng(int(seed)),
            n,
            width,
            height,
            first_cls=(first_cls + k) % len(OBJECT_CLASSES),
        )
        for fr in shot:
            fr.objects = [replace(o, trackid=o.trackid + k * CUT_TRACK_STRIDE) for o in fr.objects]
        frames.extend(shot)
    return frames, cuts


# --------------------------------------------------------------------------------------------------------------
# Action clips
# --------------------------------------------------------------------------------------------------------------

#: Action classes as Kinetics-style labels (lower case, spaces). Pairs differ only in the direction of the motion.
ACTION_CLASSES: Tuple[str, ...] = (
    "moving left",
    "moving right",
    "approaching",
    "receding",
    "moving up",
    "moving down",
)


def render_action_clip(
    rng: np.random.Generator, action: int, n_frames: int, size: int, actor_cls: Optional[int] = None
) -> np.ndarray:
    """Render one ``(n_frames, size, size, 3)`` uint8 clip of action ``ACTION_CLASSES[action]``.

    The actor is a random instance of a random object class (or ``actor_cls``) with a random facing; the camera pans
    slowly in a random direction for every class. Translation speed (0.9-1.7 px/frame) exceeds the pan (at most
    0.45 px/frame horizontally, 0.25 vertically) so the direction of motion relative to the frame is the class;
    scale runs between the same bounds for approaching and receding.

    (Version 1 of the data had ``rotating clockwise / counterclockwise`` instead of ``moving up / down``: the small
    from-scratch demo ViViT could not learn the sense of rotation, 55% / 35% within that pair, 90-95% elsewhere.)
    """
    name = ACTION_CLASSES[action]
    cls = int(rng.integers(len(OBJECT_CLASSES))) if actor_cls is None else actor_cls
    sprite = make_sprite(rng, cls)
    mirror = bool(rng.random() < 0.5)
    cam_vel = np.asarray([rng.uniform(-0.45, 0.45), rng.uniform(-0.25, 0.25)], np.float32)
    world, cam0 = _panning_world(rng, size, size, n_frames, cam_vel)

    # Nuisance motion shared by all classes: a small drift and a small scale wobble.
    drift = rng.uniform(-0.15, 0.15, 2).astype(np.float32)
    base_w = float(rng.uniform(34, 54))
    w_start = w_end = base_w
    speed = vspeed = 0.0
    angle0 = float(rng.uniform(-25, 25))
    mid = np.asarray([size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-10, 10)], np.float32)
    if name in ("moving left", "moving right"):
        speed = float(rng.uniform(0.9, 1.7)) * (-1.0 if name == "moving left" else 1.0)
        travel = abs(speed) * (n_frames - 1)
        slack = max(0.0, (size - 20 - travel) / 2)
        mid[0] = size / 2 + float(rng.uniform(-slack, slack))
        base_w = float(rng.uniform(30, 46))
        w_start = w_end = base_w
    elif name in ("approaching", "receding"):
        small, large = float(rng.uniform(22, 32)), float(rng.uniform(60, 78))
        w_start, w_end = (small, large) if name == "approaching" else (large, small)
    else:  # moving up / down
        vspeed = float(rng.uniform(0.9, 1.7)) * (-1.0 if name == "moving up" else 1.0)
        travel = abs(vspeed) * (n_frames - 1)
        slack = max(0.0, (size - 20 - travel) / 2)
        mid[1] = size / 2 + float(rng.uniform(-slack, slack))
        base_w = float(rng.uniform(30, 46))
        w_start = w_end = base_w
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        cx, cy = (int(round(v)) for v in cam0 + cam_vel * t)
        frame = Image.fromarray(world[cy : cy + size, cx : cx + size])
        a = t / max(n_frames - 1, 1)
        width = w_start * (w_end / w_start) ** a * (1.0 + 0.04 * math.sin(0.4 * t))
        pos = mid + drift * (t - (n_frames - 1) / 2)
        pos[0] += speed * (t - (n_frames - 1) / 2)
        pos[1] += vspeed * (t - (n_frames - 1) / 2)
        sp = _resized(sprite, width, angle=angle0, mirror=mirror)
        _paste(frame, sp, float(pos[0]), float(pos[1]))
        frames[t] = np.asarray(frame, np.uint8)
    return frames
