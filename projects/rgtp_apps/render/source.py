"""The frames to render: a video file (streamed by :class:`rgtp_vivit.video.VideoReader`, upright) or a folder of
images (sorted by name, one size), with the frame rate and, when known, the number of frames."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterator, List, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from rgtp_vivit.video import VideoError, VideoReader

__all__ = ["DemoError", "FrameSource", "IMAGE_EXTENSIONS", "frame_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def frame_files(folder: str) -> List[str]:
    """The image files of a frame folder (:data:`IMAGE_EXTENSIONS`, any case), sorted by name."""
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)
    )


class DemoError(RuntimeError):
    """Unusable input, config or output of the renderer; the message names the file (and the frame)."""


class FrameSource:
    """RGB uint8 frames of ``path``: a video file PyAV reads (decoded lazily, once) or a folder of images.

    ``fps`` is the video's own rate (the ``fps`` argument overrides it; a folder defaults to 25), ``count`` the
    number of frames when known, ``decoded`` the frames read so far and ``problem`` why a video stopped early
    (a truncated or corrupt file; '' when it did not).
    """

    def __init__(self, path: str, fps: Optional[float] = None) -> None:
        self.path = path
        self.decoded = 0
        self.problem = ""
        self._reader: Optional[VideoReader] = None
        self.files: List[str] = []
        if os.path.isdir(path):
            self.files = frame_files(path)
            if not self.files:
                raise DemoError(f"folder {path!r} holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
            self.fps = Fraction(fps or 25).limit_denominator(1001)
            self.count: Optional[int] = len(self.files)
        elif os.path.isfile(path):
            self._reader = self._open(path)
            self.fps = Fraction(fps or self._reader.rate or 25).limit_denominator(1001)
            self.count = self._reader.announced or None
        else:
            raise DemoError(f"input {path!r} does not exist")

    @staticmethod
    def _open(path: str) -> VideoReader:
        try:
            return VideoReader(path)
        except VideoError as e:
            raise DemoError(f"cannot read video {path!r}: {e}") from e

    @property
    def is_video(self) -> bool:
        """True for a video file, False for a folder of images."""
        return not self.files

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.files:
            yield from self._images()
            return
        reader = self._reader
        if reader is None:
            raise DemoError(f"{self.path!r} was already rendered (a FrameSource is read once)")
        self._reader = None
        try:
            for frame in reader:
                yield frame
                self.decoded = reader.decoded
        except VideoError as e:
            raise DemoError(f"cannot read video {self.path!r}: {e}") from e
        self.problem = reader.problem

    def _images(self) -> Iterator[np.ndarray]:
        shape = None
        for i, f in enumerate(self.files):
            try:
                with Image.open(f) as im:
                    im.load()
                    arr = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise DemoError(f"cannot read frame {i} {f!r}: not a readable image ({e})") from e
            if shape is not None and arr.shape != shape:
                raise DemoError(
                    f"frame {i} {f!r} is {arr.shape[1]}x{arr.shape[0]} but the first frame is "
                    f"{shape[1]}x{shape[0]}: all frames of a folder must have one size"
                )
            shape = arr.shape
            self.decoded = i + 1
            yield arr

    def probe(self) -> None:
        """Decode the whole video once (no rendering) and raise :class:`DemoError` if it is truncated or corrupt;
        sets ``count`` to the frames that decode (``--strict``)."""
        if not self.is_video:
            return
        probe = FrameSource(self.path, float(self.fps))
        n = sum(1 for _ in probe)
        if probe.problem:
            raise DemoError(
                f"video {self.path!r} is truncated or corrupt: {probe.problem} (--strict; without it the frames "
                f"that decode are rendered)"
            )
        self.count = n

    def close(self) -> None:
        """Release the video file when rendering stops before its end."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
