"""Helpers of the ViViT recogniser tests: tiny real mp4 videos (PyAV) with real-format Kinetics and EPIC CSVs, and
config overrides for a tiny random-weight ViViT (64-d, 2 spatial blocks, 4×4 tokens, 8 frames)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import List, Sequence

import av
import numpy as np

REPO = Path(__file__).resolve().parents[2]

KINETICS_CLASSES = ["abseiling", "bowling", "cooking egg"]
EPIC_HEADER = [
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
]

TINY_MODEL = [
    "VIVIT.EMBED_DIM", "64",
    "VIVIT.NUM_HEADS", "4",
    "VIVIT.SPATIAL_DEPTH", "2",
    "VIVIT.TEMPORAL_DEPTH", "1",
    "DATA.NUM_FRAMES", "8",
    "DATA.TEST_CROP_SIZE", "64",
    "DATA.TEST_SHORT_SIDE", "64",
    "RGTP.RESET_PERIOD", "2",
    "TEST.CHECKPOINT_FILE_PATH", "",
    "TRAIN.CHECKPOINT_FILE_PATH", "",
]  # fmt: skip
TINY_KINETICS = TINY_MODEL + ["MODEL.NUM_CLASSES", "3"]
TINY_EPIC = TINY_MODEL + ["MODEL.NUM_CLASSES", "5", "MODEL.NUM_NOUN_CLASSES", "4"]


def write_video(path: Path, num_frames: int, fps: int = 25, size=(72, 96), seed: int = 0) -> None:
    """A real mp4 (MPEG-4 part 2) of moving coloured blocks, written with PyAV."""
    rng = np.random.default_rng(seed)
    h, w = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        base = rng.integers(0, 255, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        for t in range(num_frames):
            img = np.kron(np.roll(base, t % 5, axis=1), np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_kinetics(root: Path, num_videos: int = 5, short_index: int | None = 4) -> Path:
    """``root/kinetics400`` with annotations/val.csv and val/<id>_<start>_<end>.mp4 (one clip shorter than a
    view when ``short_index`` is given)."""
    data = root / "kinetics400"
    rows = []
    for i in range(num_videos):
        label = KINETICS_CLASSES[i % len(KINETICS_CLASSES)]
        ytid = f"vid{i:02d}-{chr(97 + i)}_x"
        rows.append([label, ytid, 10 * i, 10 * i + 1, "val"])
        frames = 10 if i == short_index else 25 + 3 * i
        write_video(
            data / "val" / f"{ytid}_{10 * i:06d}_{10 * i + 1:06d}.mp4", frames, fps=25, seed=i
        )
    (data / "annotations").mkdir(parents=True, exist_ok=True)
    with open(data / "annotations" / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows(rows)
    return data


def epic_row(nid: str, vid: str, start: str, stop: str, verb: int, noun: int) -> List[str]:
    """One EPIC_100 CSV row with every real column."""
    return [nid, vid.split("_")[0], vid, start, start, stop, "0", "0", "take cup", "take", str(verb), "cup",
            str(noun), "['cup']", f"[{noun}]"]  # fmt: skip


def make_epic(
    root: Path, rows: Sequence[Sequence[str]] | None = None, name: str = "EPIC_100_validation.csv"
) -> Path:
    """``root/epic`` with EPIC_100_validation.csv and videos/P01_01.mp4, P01_02.mp4 (3 s at 30 fps)."""
    data = root / "epic"
    write_video(data / "videos" / "P01_01.mp4", 90, fps=30, seed=10)
    write_video(data / "videos" / "P01_02.mp4", 90, fps=30, seed=11)
    if rows is None:
        rows = [
            epic_row("P01_01_0", "P01_01", "00:00:00.10", "00:00:01.20", 0, 1),
            epic_row("P01_01_1", "P01_01", "00:00:01.00", "00:00:02.90", 3, 2),
            epic_row(
                "P01_02_0", "P01_02", "00:00:00.50", "00:00:00.80", 4, 0
            ),  # 9 frames < one view
            epic_row("P01_02_1", "P01_02", "00:00:01.50", "00:00:02.50", 1, 3),
        ]
    with open(data / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EPIC_HEADER)
        w.writerows(rows)
    return data


def cfg_from(files: Sequence[str], opts: Sequence[str]):
    """Load a config the way tools/vivit_net.py does."""
    from rgtp_vivit.config import load_config

    return load_config(
        argparse.Namespace(cfg_files=[str(REPO / f) for f in files], opts=list(opts))
    )
