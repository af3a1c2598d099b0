"""Writing the rendered frames: an ``.mp4`` (H.264 where available, else MPEG-4 part 2; yuv420p) or an animated
``.gif``, under a temporary name in the output folder, renamed into place only when complete.

GIFs share one palette of :data:`GIF_COLORS` colours built from the first frames (no dithering): consecutive
frames then differ only where the picture changes, which keeps files small and encoding fast (a GIF cannot hold
more than 256 colours anyway).
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import List, Optional, Tuple

import av
import numpy as np
from PIL import Image

from rgtp import visualize as vis
from rgtp.fileio import atomic_path

from .source import DemoError

__all__ = ["OUTPUT_EXTENSIONS", "GIF_COLORS", "AtomicVideoWriter", "atomic_png"]

OUTPUT_EXTENSIONS = (".mp4", ".gif")
#: Colours of the shared GIF palette.
GIF_COLORS = 128
#: Frames from which the GIF palette is built.
PALETTE_FRAMES = 8


def atomic_png(frame: np.ndarray, path: str) -> None:
    """Save ``frame`` losslessly as a PNG at ``path`` (atomically: no partial or temporary file on failure)."""
    with atomic_path(path) as tmp:
        Image.fromarray(frame).save(tmp, format="PNG", optimize=True)


class AtomicVideoWriter:
    """Write RGB uint8 frames to ``path`` (``.mp4`` or ``.gif``) under a temporary name in its folder;
    :meth:`commit` renames it into place, :meth:`abort` deletes it. ``save_frame = (index, png)`` also saves that
    frame losslessly. ``gif_colors`` sets the size of the GIF palette (2 to 256)."""

    def __init__(self, path: str, fps: Fraction, gif_colors: int = GIF_COLORS) -> None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in OUTPUT_EXTENSIONS:
            raise DemoError(f"output {path!r}: the extension must be one of {OUTPUT_EXTENSIONS}")
        if not 2 <= int(gif_colors) <= 256:
            raise DemoError(f"GIF colours must lie in 2..256, got {gif_colors}")
        self.path = path
        self.ext = ext
        self.fps = fps
        self.gif_colors = int(gif_colors)
        self._atomic = atomic_path(
            path
        )  # entered here, left by commit() (rename) or abort() (removal)
        self.tmp = self._atomic.__enter__()
        self.count = 0
        self._container = None
        self._stream = None
        self._gif: List[Image.Image] = []
        self._pending: List[np.ndarray] = []  # GIF frames waiting for the palette
        self._palette: Optional[Image.Image] = None
        self._size: Optional[Tuple[int, int]] = None
        self.save_frame: Optional[tuple] = None

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame (every frame must have the first frame's size)."""
        frame = vis.pad_to_even(frame)
        if self.save_frame is not None and self.count == self.save_frame[0]:
            atomic_png(frame, self.save_frame[1])
        if self._size is None:
            self._size = frame.shape[:2]
            if self.ext == ".mp4":
                self._open_mp4(*self._size)
        elif frame.shape[:2] != self._size:
            raise DemoError(
                f"rendered frame {self.count} has size {frame.shape[:2]}, expected {self._size}"
            )
        if self.ext == ".gif":
            self._pending.append(frame)
            if self._palette is None and len(self._pending) >= PALETTE_FRAMES:
                self._build_palette()
            if self._palette is not None:
                self._flush_gif()
        else:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.count
            vf.time_base = 1 / self.fps
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        self.count += 1

    def _build_palette(self) -> None:
        """One adaptive palette from the pending frames (every other pixel of each, stacked)."""
        sample = np.concatenate([f[::2, ::2] for f in self._pending], axis=0)
        self._palette = Image.fromarray(sample).quantize(
            colors=self.gif_colors, method=Image.Quantize.MEDIANCUT
        )

    def _flush_gif(self) -> None:
        for f in self._pending:
            self._gif.append(
                Image.fromarray(f).quantize(palette=self._palette, dither=Image.Dither.NONE)
            )
        self._pending = []

    def _open_mp4(self, h: int, w: int) -> None:
        self._container = av.open(self.tmp, "w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": "23", "preset": "medium"}
        else:
            self._stream.bit_rate = int(max(1_000_000, w * h * float(self.fps) * 0.3))

    def commit(self) -> str:
        """Finish the file and rename it to the output path."""
        if self.count == 0:
            raise DemoError(f"no frames to write to {self.path!r}")
        if self.ext == ".gif":
            if self._palette is None:
                self._build_palette()
            self._flush_gif()
            duration = max(20, int(round(1000 / float(self.fps))))
            self._gif[0].save(
                self.tmp,
                format="GIF",
                save_all=True,
                append_images=self._gif[1:],
                duration=duration,
                loop=0,
                optimize=False,
            )
            self._gif = []
        else:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        atomic, self._atomic = self._atomic, None
        atomic.__exit__(None, None, None)  # fsync and rename into place
        return self.path

    def abort(self) -> None:
        """Drop everything written so far (the temporary file included)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self._container = None
        self._gif, self._pending = [], []
        if self._atomic is not None:
            atomic, self._atomic = self._atomic, None
            error = DemoError(f"rendering {self.path!r} was aborted")
            atomic.__exit__(DemoError, error, None)  # removes the temporary file
