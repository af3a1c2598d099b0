"""Video decoding with PyAV (no ffmpeg binary) and the deterministic multi-view test transform (docs/method.md §7).

* :func:`decode_video` decodes a whole file or a [start, stop) segment, optionally resampled to a target frame rate
  (Kinetics: 25 fps, replacing the official ``ffmpeg -r 25``), as uint8 ``(L, H, W, 3)`` RGB;
  :class:`VideoReader` streams the same frames one at a time (for renderers of long videos).
* :func:`make_views` builds ``n_temporal × n_spatial`` views of ``num_frames`` frames at ``stride``: temporal starts
  int(k·(L−span)/(n_t−1)), a clip shorter than one view repeats its last frame, short side resized to
  ``short_side`` (bilinear, antialiased), normalised, and square crops at int(k·(long−crop)/(n_s−1)) along the long
  axis (centred on the short axis).
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)


class VideoError(RuntimeError):
    """A video cannot be used: missing, corrupt, empty, or a segment outside it. The message names the file."""


def upright_rgb(frame: "av.VideoFrame") -> np.ndarray:
    """The RGB uint8 ``(H, W, 3)`` picture of a decoded frame, rotated as its display matrix says (what a player
    shows: a phone video stored landscape with a 90° display rotation comes out portrait)."""
    img = frame.to_ndarray(format="rgb24")
    quarter = int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
    if quarter:
        # PyAV's rotation is counter-clockwise (av_display_rotation_get), as np.rot90
        img = np.ascontiguousarray(np.rot90(img, quarter))
    return img


def expected_frames(stream: "av.video.stream.VideoStream") -> int:
    """Frames the container header announces for ``stream`` (0 when unknown)."""
    try:
        return max(0, int(stream.frames or 0))
    except (TypeError, ValueError):
        return 0


class VideoReader:
    """Stream the upright RGB uint8 frames of a video file one at a time (the frames :func:`decode_video` returns
    for a whole-file decode without resampling, but never all in memory).

    Opening raises :class:`VideoError` for a missing file, a file PyAV cannot open and one without a video stream.
    Iterating decodes once, lazily; a decoding error before the first frame raises :class:`VideoError`, one after
    some frames ends the iteration and says why in :attr:`problem`, as does a video that ends before the frames its
    header announces (:attr:`problem` is '' when neither happened). ``rate`` is the stream's frame rate
    (a ``Fraction``, None when unknown), ``announced`` the frames of the header (0: unknown), ``decoded`` the
    frames yielded so far.
    """

    def __init__(self, path: str) -> None:
        import os

        if not os.path.isfile(path):
            raise VideoError(f"missing video file: {path}")
        self.path = path
        try:
            self._container = av.open(path)
        except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
            raise VideoError(f"not a video PyAV can open ({e})") from e
        if not self._container.streams.video:
            self._container.close()
            raise VideoError("it has no video stream")
        stream = self._container.streams.video[0]
        self.rate = stream.average_rate or stream.guessed_rate or None
        self.announced = expected_frames(stream)
        self.decoded = 0
        self.problem = ""

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._container is None:
            raise VideoError(f"{self.path} was already decoded (a VideoReader decodes once)")
        container, self._container = self._container, None
        error = None
        try:
            for frame in container.decode(container.streams.video[0]):
                yield upright_rgb(frame)
                self.decoded += 1
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if self.decoded == 0:
                raise VideoError(f"cannot decode frame 0: {e}") from e
            error = e
        finally:
            container.close()
        if self.decoded == 0:
            raise VideoError("no frames could be decoded")
        if error is not None:
            self.problem = f"decoding stopped with an error after {self.decoded} frames ({error})"
        elif self.announced and self.decoded < self.announced:
            self.problem = (
                f"decoded {self.decoded} of the {self.announced} frames its header announces"
            )

    def close(self) -> None:
        """Release the file without decoding (iterating closes it by itself)."""
        if self._container is not None:
            self._container.close()
            self._container = None


def decode_video(
    path: str,
    start: Optional[float] = None,
    stop: Optional[float] = None,
    target_fps: float = 0.0,
    end_tolerance: float = 0.5,
    report: Optional[List[str]] = None,
    strict: bool = False,
) -> Tuple[np.ndarray, float]:
    """Decode ``path`` (the segment [start, stop) in seconds if given) to uint8 RGB frames ``(L, H, W, 3)``.

    With ``target_fps`` > 0 the frames are resampled to that rate by picking, for each output time, the last frame
    shown at that time (what ``ffmpeg -r`` does). Returns the frames and their frame rate. Raises
    :class:`VideoError` for a missing, unreadable or empty video, and for a segment whose stop lies more than
    ``end_tolerance`` seconds past the end of the video. Frames are upright as a player shows them (the display
    rotation of the stream is applied).

    A truncated or partly corrupt video (decoding stops with an error after some frames, or a whole-file decode
    gives fewer frames than the header announces) is decoded as far as it goes: the problem is logged as a warning
    and appended to ``report`` (a list, when given); with ``strict`` it raises :class:`VideoError` instead.
    """
    import os

    if not os.path.isfile(path):
        raise VideoError(f"missing video file: {path}")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"cannot open video {path}: {e}") from e
    try:
        if not container.streams.video:
            raise VideoError(f"no video stream in {path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base is not None else 0.0
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        duration = None
        if stream.duration is not None and tb:
            duration = stream.duration * tb
        elif container.duration is not None:
            duration = container.duration / av.time_base
        if stop is not None and duration is not None and stop > duration + end_tolerance:
            raise VideoError(
                f"segment [{start:.3f}s, {stop:.3f}s] stops past the end of {path} (duration {duration:.3f}s)"
            )
        if start is not None and start > 0 and tb:
            container.seek(int(start / tb), stream=stream, backward=True, any_frame=False)
        announced = expected_frames(stream)
        frames: List[np.ndarray] = []
        times: List[float] = []
        half = 0.5 / fps
        problem = ""
        seen = 0
        reached_stop = False
        try:
            for frame in container.decode(stream):
                seen += 1
                ft = float(frame.pts * tb) if frame.pts is not None and tb else len(times) / fps
                if start is not None and ft < start - half:
                    continue
                if stop is not None and ft >= stop - half:
                    reached_stop = True
                    break
                frames.append(upright_rgb(frame))
                times.append(ft)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if not frames:
                raise
            problem = f"decoding stopped with an error after {len(frames)} frames ({e})"
        if not problem and start is None and stop is None and announced:
            if seen < announced - max(1, announced // 50):
                problem = f"decoded {seen} of the {announced} frames its header announces"
        elif not problem and stop is not None and not reached_stop and announced:
            if seen < announced - max(1, announced // 50) and duration is not None:
                problem = f"decoded {seen} of the {announced} frames its header announces"
        if problem and frames:
            msg = f"video {path} is truncated or corrupt: {problem}; partly decoded"
            if strict:
                raise VideoError(f"{msg} (DATA.STRICT is True)")
            logger.warning("%s: using the %d frames decoded", msg, len(frames))
            if report is not None:
                report.append(msg)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"cannot decode video {path}: {e}") from e
    finally:
        container.close()
    if not frames:
        where = "" if start is None else f" in segment [{start:.3f}s, {stop:.3f}s]"
        raise VideoError(f"no frames decoded from {path}{where}")
    video = np.stack(frames)
    if target_fps and target_fps > 0:
        t0 = times[0] if start is None else start
        t1 = (times[-1] + 1.0 / fps) if stop is None else stop
        n_out = max(1, int(round((t1 - t0) * target_fps)))
        out_t = t0 + np.arange(n_out) / target_fps
        idx = np.searchsorted(np.asarray(times), out_t + 1e-6, side="right") - 1
        video = video[np.clip(idx, 0, len(frames) - 1)]
        fps = float(target_fps)
    return video, fps


def temporal_starts(length: int, span: int, n_temporal: int) -> List[int]:
    """Start frames of the temporal views: int(k·(L−span)/(n−1)), k = 0..n−1 (0 if the clip is shorter)."""
    room = max(0, length - span)
    if n_temporal == 1:
        return [room // 2]
    return [int(k * room / (n_temporal - 1)) for k in range(n_temporal)]


def spatial_offsets(size: int, crop: int, n: int) -> List[int]:
    """Crop offsets int(k·(size−crop)/(n−1)) along one axis (centred when n = 1)."""
    room = size - crop
    if n == 1:
        return [room // 2]
    return [int(k * room / (n - 1)) for k in range(n)]


def resized_shape(h: int, w: int, short_side: int) -> Tuple[int, int]:
    """(H', W') with the short side = ``short_side`` and the aspect ratio kept (long side rounded)."""
    if h <= w:
        return short_side, max(short_side, int(round(w * short_side / h)))
    return max(short_side, int(round(h * short_side / w))), short_side


def make_views(
    video: np.ndarray,
    num_frames: int,
    stride: int,
    n_temporal: int,
    n_spatial: int,
    crop: int,
    short_side: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """The test views of one video ``(L, H, W, 3)`` uint8: float ``(n_t·n_s, 3, num_frames, crop, crop)``,
    temporal-major (view index = k_t·n_s + k_s)."""
    length = video.shape[0]
    span = num_frames * stride
    if length < span:
        logger.debug(
            "clip of %d frames is shorter than one view (%d): repeating its last frame",
            length,
            span,
        )
    starts = temporal_starts(length, span, n_temporal)
    idx = np.asarray([[min(s + j * stride, length - 1) for j in range(num_frames)] for s in starts])
    uniq, inverse = np.unique(idx, return_inverse=True)
    frames = (
        torch.from_numpy(np.ascontiguousarray(video[uniq])).permute(0, 3, 1, 2).float().div_(255.0)
    )
    h, w = frames.shape[-2:]
    nh, nw = resized_shape(h, w, short_side)
    if (nh, nw) != (h, w):
        frames = F.interpolate(
            frames, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
        )
    m = torch.tensor(mean, dtype=frames.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=frames.dtype).view(1, 3, 1, 1)
    frames = (frames - m) / s
    clips = frames[torch.from_numpy(inverse.reshape(idx.shape))]  # (n_t, T, 3, H', W')
    if nw >= nh:
        ys = [int((nh - crop) // 2)] * n_spatial
        xs = spatial_offsets(nw, crop, n_spatial)
    else:
        xs = [int((nw - crop) // 2)] * n_spatial
        ys = spatial_offsets(nh, crop, n_spatial)
    views = [
        clips[k, :, :, y : y + crop, x : x + crop].permute(1, 0, 2, 3)
        for k in range(n_temporal)
        for y, x in zip(ys, xs)
    ]
    return torch.stack(views).contiguous()


def parse_timestamp(value: str) -> float:
    """Seconds of an EPIC timestamp ``HH:MM:SS.fff`` (or a plain number of seconds)."""
    text = str(value).strip()
    parts = text.split(":")
    if not parts or len(parts) > 3:
        raise ValueError(f"bad timestamp {value!r}: expected HH:MM:SS.fff")
    total = 0.0
    for p in parts:
        total = total * 60 + float(p)
    if math.isnan(total) or total < 0:
        raise ValueError(f"bad timestamp {value!r}")
    return total
