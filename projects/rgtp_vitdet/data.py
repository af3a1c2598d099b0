"""Video-aware data loading: the test-time mapper (resize of docs/method.md §7), a sampler that gives each process
whole videos in frame order, and a batch sampler that batches frames of several videos (one frame per video).
"""

from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.utils import comm
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Sampler

from .config import behaviour_setting
from .vid import DatasetError

__all__ = [
    "VIDTestMapper",
    "read_frame",
    "resize_frame",
    "resized_shape",
    "VideoInferenceSampler",
    "VideoBatchSampler",
    "assign_videos",
    "build_vid_test_loader",
]

logger = logging.getLogger("detectron2.rgtp_vitdet.data")


def read_frame(path: str, fmt: str = "RGB", where: str = "") -> np.ndarray:
    """Read a JPEG frame as an HxWx3 uint8 array; a missing or corrupt file raises :class:`DatasetError` naming the
    file (and ``where``, e.g. the video and frame)."""
    ctx = f" ({where})" if where else ""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise DatasetError(f"frame file {path!r}{ctx} does not exist") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(
            f"frame file {path!r}{ctx} is not a readable image (corrupt JPEG?): {e}"
        ) from e
    if fmt == "BGR":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple:
    """Output (h, w) of the VID test resize: scale = min(short/short_edge, max_size/long_edge), rounded dims."""
    scale = min(short_edge / min(height, width), max_size / max(height, width))
    return int(round(height * scale)), int(round(width * scale))


RESIZE_ROUNDINGS = ("float", "uint8")


def resize_frame(image: np.ndarray, size: tuple, rounding: str = "float") -> torch.Tensor:
    """Bilinear resize with antialias (as the paper's evaluation) of an HxWx3 uint8 frame to a 3xhxw float tensor
    in 0..255. ``rounding="float"`` keeps the interpolated values (the clean behaviour); ``"uint8"`` rounds them
    to the nearest integer and clamps to 0..255, i.e. re-quantises to 8 bits before normalisation, as the official
    code's resize does (``MODEL.RGTP.RESIZE_ROUNDING``)."""
    if rounding not in RESIZE_ROUNDINGS:
        raise ValueError(f"rounding={rounding!r}: allowed one of {RESIZE_ROUNDINGS}")
    t = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0)
    if tuple(size) != tuple(image.shape[:2]):
        t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        if rounding == "uint8":
            t = t.round().clamp_(0, 255)
    return t.squeeze(0)


def load_checked_frame(d: dict, fmt: str = "RGB") -> np.ndarray:
    """The frame of dataset dict ``d``, read completely, after the checks the evaluation makes: a missing, corrupt
    or truncated file, or a size other than the annotation's ``width``/``height``, raises :class:`DatasetError`
    naming the file (``datasets/prepare_vid.py --check`` runs exactly this on every frame)."""
    where = f"video {d.get('video_id')!r}, frame {d.get('frame_index')}"
    img = read_frame(d["file_name"], fmt, where)
    h, w = img.shape[:2]
    if (h, w) != (d["height"], d["width"]):
        raise DatasetError(
            f"frame file {d['file_name']!r} ({where}) is {w}x{h} pixels but its annotation says "
            f"{d['width']}x{d['height']}"
        )
    return img


class VIDTestMapper:
    """Dataset dict -> model input for evaluation: reads the frame, resizes it (short edge ``INPUT.MIN_SIZE_TEST``,
    long edge at most ``INPUT.MAX_SIZE_TEST``; re-quantised as ``MODEL.RGTP.RESIZE_ROUNDING`` says) and keeps
    ``video_id``/``frame_index`` for the video model.
    """

    def __init__(self, cfg: CfgNode) -> None:
        self.short_edge = int(cfg.INPUT.MIN_SIZE_TEST)
        self.max_size = int(cfg.INPUT.MAX_SIZE_TEST)
        self.fmt = cfg.INPUT.FORMAT
        self.rounding = behaviour_setting(cfg, "RESIZE_ROUNDING")

    def __call__(self, d: dict) -> dict:
        img = load_checked_frame(d, self.fmt)
        h, w = img.shape[:2]
        size = resized_shape(h, w, self.short_edge, self.max_size)
        return {
            "image": resize_frame(img, size, self.rounding),
            "height": h,
            "width": w,
            "image_id": d["image_id"],
            "video_id": d["video_id"],
            "frame_index": d["frame_index"],
            "file_name": d["file_name"],
        }


def video_segments(dicts: Sequence[dict]) -> Dict[str, List[int]]:
    """Indices of the frames of every video segment, in frame order (insertion order of first appearance)."""
    segs: Dict[str, List[int]] = {}
    for i, d in enumerate(dicts):
        segs.setdefault(d["video_id"], []).append(i)
    for idx in segs.values():
        idx.sort(key=lambda i: dicts[i]["frame_index"])
    return segs


def assign_videos(lengths: Dict[str, int], world_size: int) -> List[List[str]]:
    """Assign whole videos to ``world_size`` workers balanced by frame count (longest first, each to the worker with
    the fewest frames so far; ties to the lowest rank). Each worker's videos are returned in dataset order.
    """
    order = {v: i for i, v in enumerate(lengths)}
    loads = [0] * world_size
    parts: List[List[str]] = [[] for _ in range(world_size)]
    for vid in sorted(lengths, key=lambda v: (-lengths[v], order[v])):
        r = min(range(world_size), key=lambda i: (loads[i], i))
        parts[r].append(vid)
        loads[r] += lengths[vid]
    return [sorted(p, key=order.__getitem__) for p in parts]


class VideoInferenceSampler(Sampler):
    """Gives this process whole videos (balanced by frame count over processes), each in frame order, one video
    after the other. No video is ever split between processes."""

    def __init__(
        self, dicts: Sequence[dict], rank: int | None = None, world_size: int | None = None
    ) -> None:
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        segs = video_segments(dicts)
        self.videos = assign_videos({v: len(i) for v, i in segs.items()}, self.world_size)[
            self.rank
        ]
        self.segments = [segs[v] for v in self.videos]
        self._indices = [i for s in self.segments for i in s]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


class VideoBatchSampler(Sampler):
    """Batches of up to ``videos_per_batch`` frames, one frame from each of that many videos running side by side;
    when a video ends the next one of this process takes its slot. Every video's frames still come in order.
    """

    def __init__(self, sampler: VideoInferenceSampler, videos_per_batch: int) -> None:
        self.segments = sampler.segments
        self.videos_per_batch = videos_per_batch
        self._batches = self._make()

    def _make(self) -> List[List[int]]:
        pending = list(self.segments)
        slots: List[List[int]] = []
        batches = []
        while pending or slots:
            while len(slots) < self.videos_per_batch and pending:
                slots.append(list(pending.pop(0)))
            batches.append([s.pop(0) for s in slots])
            slots = [s for s in slots if s]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def _trivial_collate(batch: list) -> list:
    return batch


def build_vid_test_loader(cfg: CfgNode, dataset_name: str) -> DataLoader:
    """The test loader of a VID split: this process's whole videos in frame order, ``TEST.VIDEOS_PER_BATCH`` videos
    side by side, frames decoded by ``DATALOADER.NUM_WORKERS`` workers."""
    dicts = DatasetCatalog.get(dataset_name)
    if not dicts:
        raise DatasetError(f"dataset {dataset_name!r} has no frames")
    sampler = VideoInferenceSampler(dicts)
    logger.info(
        f"rank {sampler.rank}/{sampler.world_size}: {len(sampler.videos)} videos, {len(sampler)} frames of "
        f"{dataset_name!r}"
    )
    dataset = MapDataset(DatasetFromList(dicts, copy=False), VIDTestMapper(cfg))
    return DataLoader(
        dataset,
        batch_sampler=VideoBatchSampler(sampler, int(cfg.TEST.VIDEOS_PER_BATCH)),
        num_workers=int(cfg.DATALOADER.NUM_WORKERS),
        collate_fn=_trivial_collate,
    )
