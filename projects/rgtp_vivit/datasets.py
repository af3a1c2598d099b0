"""Kinetics-400 and EPIC-Kitchens-100 test datasets (docs/method.md §7), decoded with PyAV.

Each item is a dict: ``index``, ``key`` (a unique file-name-safe id), ``label`` (the class, EPIC: verb), ``noun``
(EPIC, else -1), ``views`` (float ``(12, 3, T, S, S)``) and ``error`` (None, or the message of a
:class:`~rgtp_vivit.video.VideoError` when the video is missing or unusable and ``DATA.STRICT`` is False).

Layouts (relative to ``DATA.PATH_TO_DATA_DIR``, itself under $RGTP_DATASETS or ./datasets):

* Kinetics: ``annotations/{split}.csv`` with columns label,youtube_id,time_start,time_end,split and videos
  ``{split}/<youtube_id>_<start:06d>_<end:06d>.mp4`` (or in a ``{split}/<label>/`` subfolder).
* EPIC-Kitchens-100: ``EPIC_100_validation.csv`` / ``EPIC_100_train.csv`` (at the root or in ``annotations/``) and
  ``videos/<video_id>.mp4`` (or ``<participant_id>/videos/<video_id>.MP4``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from fvcore.common.config import CfgNode

from rgtp.config import ConfigError

from .build import DATASET_REGISTRY
from .config import dataset_root
from .video import VideoError, decode_video, make_views, parse_timestamp

logger = logging.getLogger(__name__)

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
EPIC_COLUMNS = (
    "narration_id",
    "participant_id",
    "video_id",
    "start_timestamp",
    "stop_timestamp",
    "verb_class",
    "noun_class",
)
EPIC_FILES = {
    "val": "EPIC_100_validation.csv",
    "validation": "EPIC_100_validation.csv",
    "train": "EPIC_100_train.csv",
}


@dataclass
class VideoRecord:
    """One test item: the file, an optional [start, stop) segment in seconds, and its labels."""

    key: str
    path: str
    label: int
    noun: int = -1
    start: Optional[float] = None
    stop: Optional[float] = None


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file (and the line)."""


def read_csv(path: str, required: tuple) -> List[Dict[str, str]]:
    """Rows of a CSV with a header; raises :class:`AnnotationError` (a ValueError) naming the file and the missing
    columns."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise AnnotationError(
                f"{path}: missing column(s) {missing}; found {header}, required {list(required)}"
            )
        return [
            {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in reader
        ]


def kinetics_classes(cfg: CfgNode, root: str, rows: List[Dict[str, str]], ann: str) -> List[str]:
    """The class list of the model, which fixes the label indices: ``MODEL.CLASS_NAMES`` (the model's config),
    else ``DATA.CLASS_NAMES_FILE`` (one name per line, relative to the data root), else the sorted class names of
    the annotation file, accepted only when they are exactly ``MODEL.NUM_CLASSES`` (the full Kinetics-400 CSVs).
    Any count other than ``MODEL.NUM_CLASSES`` raises :class:`ConfigError` naming both numbers."""
    k = int(cfg.MODEL.NUM_CLASSES)
    names = list(getattr(cfg.MODEL, "CLASS_NAMES", []) or [])
    source = "MODEL.CLASS_NAMES"
    if not names and cfg.DATA.CLASS_NAMES_FILE:
        names_file = cfg.DATA.CLASS_NAMES_FILE
        if not os.path.isabs(names_file):
            names_file = os.path.join(root, names_file)
        if not os.path.isfile(names_file):
            raise FileNotFoundError(
                f"DATA.CLASS_NAMES_FILE={cfg.DATA.CLASS_NAMES_FILE!r} not found: looked at {names_file}"
            )
        with open(names_file) as f:
            names = [ln.strip() for ln in f if ln.strip()]
        source = f"DATA.CLASS_NAMES_FILE ({names_file})"
    if names:
        if len(names) != k:
            raise ConfigError(
                f"{source} lists {len(names)} classes but MODEL.NUM_CLASSES is {k}: they must agree"
            )
        return names
    names = sorted({r["label"] for r in rows})
    if len(names) != k:
        raise ConfigError(
            f"{ann} holds {len(names)} classes but MODEL.NUM_CLASSES is {k}: the label indices cannot be "
            f"taken from the annotation file; give the model's class list in MODEL.CLASS_NAMES or "
            f"DATA.CLASS_NAMES_FILE ({k} names, one per line, in the model's order)"
        )
    logger.info("class list: the %d sorted class names of %s", k, ann)
    return names


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


class VideoDataset(torch.utils.data.Dataset):
    """Common decoding and view building; subclasses fill ``self.records``."""

    def __init__(self, cfg: CfgNode, split: str) -> None:
        self.cfg = cfg
        self.split = split
        self.root = dataset_root(cfg.DATA.PATH_TO_DATA_DIR)
        self.records: List[VideoRecord] = []
        self._report: List[str] = []

    def __len__(self) -> int:
        return len(self.records)

    def load_views(self, rec: VideoRecord) -> torch.Tensor:
        """Decode ``rec`` and build its test views."""
        d = self.cfg.DATA
        video, _ = decode_video(
            rec.path,
            rec.start,
            rec.stop,
            d.TARGET_FPS,
            d.END_TOLERANCE,
            report=self._report,
            strict=bool(d.STRICT),
        )
        return make_views(
            video,
            d.NUM_FRAMES,
            d.SAMPLING_RATE,
            self.cfg.TEST.NUM_ENSEMBLE_VIEWS,
            self.cfg.TEST.NUM_SPATIAL_CROPS,
            d.TEST_CROP_SIZE,
            d.TEST_SHORT_SIDE,
            d.MEAN,
            d.STD,
        )

    def __getitem__(self, index: int) -> Dict[str, Any]:
        rec = self.records[index]
        item: Dict[str, Any] = {
            "index": index,
            "key": rec.key,
            "label": rec.label,
            "noun": rec.noun,
            "views": None,
            "error": None,
            "partial": None,
        }
        self._report: List[str] = []
        try:
            item["views"] = self.load_views(rec)
            if self._report:
                item["partial"] = "; ".join(self._report)
        except VideoError as e:
            if self.cfg.DATA.STRICT:
                raise
            item["error"] = str(e)
        return item


@DATASET_REGISTRY.register()
class Kinetics(VideoDataset):
    """Kinetics-400 from its CSV and video folder: full clips resampled to DATA.TARGET_FPS (25), 4×3 views."""

    def __init__(self, cfg: CfgNode, split: str) -> None:
        super().__init__(cfg, split)
        ann = os.path.join(self.root, cfg.DATA.ANNOTATION_FILE.format(split=split))
        rows = read_csv(ann, KINETICS_COLUMNS)
        self.classes = kinetics_classes(cfg, self.root, rows, ann)
        index = {c: i for i, c in enumerate(self.classes)}
        video_dir = os.path.join(self.root, cfg.DATA.VIDEO_DIR.format(split=split))
        self.video_dir = video_dir
        for line, r in enumerate(rows, start=2):
            if r["label"] not in index:
                raise ValueError(f"{ann}:{line}: label {r['label']!r} is not in the class list")
            try:
                t0, t1 = int(float(r["time_start"])), int(float(r["time_end"]))
            except ValueError:
                raise ValueError(
                    f"{ann}:{line}: time_start/time_end must be numbers, got {r}"
                ) from None
            if t1 <= t0:
                raise ValueError(f"{ann}:{line}: time_end {t1} is not after time_start {t0}")
            name = f"{r['youtube_id']}_{t0:06d}_{t1:06d}"
            path = os.path.join(video_dir, name + ".mp4")
            if not os.path.exists(path):
                alt = os.path.join(video_dir, r["label"], name + ".mp4")
                path = alt if os.path.exists(alt) else path
            self.records.append(VideoRecord(key=_safe(name), path=path, label=index[r["label"]]))
        logger.info(
            "Kinetics %s: %d videos, %d classes from %s",
            split,
            len(self.records),
            len(self.classes),
            ann,
        )


@DATASET_REGISTRY.register()
class Epickitchens(VideoDataset):
    """EPIC-Kitchens-100 segments cut by start/stop timestamps; label = verb_class, plus noun_class."""

    def __init__(self, cfg: CfgNode, split: str) -> None:
        super().__init__(cfg, split)
        if cfg.DATA.ANNOTATION_FILE and "EPIC" in cfg.DATA.ANNOTATION_FILE:
            names = [cfg.DATA.ANNOTATION_FILE.format(split=split)]
        else:
            if split not in EPIC_FILES:
                raise ValueError(f"unknown EPIC split {split!r}: allowed {sorted(EPIC_FILES)}")
            names = [EPIC_FILES[split], os.path.join("annotations", EPIC_FILES[split])]
        ann = next(
            (
                os.path.join(self.root, n)
                for n in names
                if os.path.isfile(os.path.join(self.root, n))
            ),
            None,
        )
        if ann is None:
            raise FileNotFoundError(
                f"EPIC annotation file not found: tried {[os.path.join(self.root, n) for n in names]}"
            )
        rows = read_csv(ann, EPIC_COLUMNS)
        for line, r in enumerate(rows, start=2):
            try:
                start = parse_timestamp(r["start_timestamp"])
                stop = parse_timestamp(r["stop_timestamp"])
                verb, noun = int(r["verb_class"]), int(r["noun_class"])
            except ValueError as e:
                raise ValueError(f"{ann}:{line} ({r.get('narration_id')}): {e}") from None
            if stop <= start:
                raise ValueError(
                    f"{ann}:{line} ({r['narration_id']}): stop_timestamp {r['stop_timestamp']} is not after "
                    f"start_timestamp {r['start_timestamp']}"
                )
            vid = r["video_id"]
            candidates = [
                os.path.join(self.root, "videos", vid + ".mp4"),
                os.path.join(self.root, "videos", vid + ".MP4"),
                os.path.join(self.root, r["participant_id"], "videos", vid + ".MP4"),
                os.path.join(self.root, r["participant_id"], "videos", vid + ".mp4"),
            ]
            path = next((p for p in candidates if os.path.exists(p)), candidates[0])
            self.records.append(
                VideoRecord(
                    key=_safe(r["narration_id"]),
                    path=path,
                    label=verb,
                    noun=noun,
                    start=start,
                    stop=stop,
                )
            )
        logger.info("EPIC-Kitchens %s: %d segments from %s", split, len(self.records), ann)
