#!/usr/bin/env python
"""Check an ImageNet VID split on disk and, optionally, write its COCO-style JSON.

    python datasets/prepare_vid.py --check                       # ILSVRC2015 layout under $RGTP_DATASETS
    python datasets/prepare_vid.py --to-json datasets/vid/annotations/vid_val.json

The check runs exactly the loaders and the checks of the evaluation: it loads the split (every XML, every class
name) and then reads every frame completely as the evaluation's mapper does (a truncated or corrupt JPEG, or a JPEG
whose size disagrees with its XML ``<width>``/``<height>``, is an error), so a split it passes also evaluates. It
prints a summary; any problem is one line ``error: ...`` naming the file or frame, exit status 2 (``--debug`` shows
the traceback). ``--to-json`` writes the COCO-style layout
(mmtracking CocoVID fields, ``file_name`` relative to ``--image-root``), atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rgtp_vitdet.data import load_checked_frame
from rgtp_vitdet.vid import VID_CATEGORIES, load_vid_ilsvrc
from tqdm import tqdm

from rgtp.cli import run_main
from rgtp.fileio import atomic_write_json, dataset_path


def main(argv: list[str] | None = None) -> int:
    """Load (and so validate) the ILSVRC2015-layout split; optionally export it as COCO-style JSON."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--root", default="", help="ILSVRC2015 directory (default $RGTP_DATASETS/ILSVRC2015)"
    )
    p.add_argument("--split", default="val")
    p.add_argument("--check", action="store_true", help="only load and summarise")
    p.add_argument("--to-json", default="", help="write the COCO-style JSON here")
    p.add_argument(
        "--image-root",
        default="",
        help="file_name in the JSON is relative to this (default: --root)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.root or dataset_path("ILSVRC2015")
    dicts = load_vid_ilsvrc(root, args.split)
    for d in tqdm(dicts, desc=f"reading the {args.split} frames", leave=False):
        load_checked_frame(
            d
        )  # the evaluation's own read and size check (DatasetError naming the file)
    videos = sorted({d["video"] for d in dicts})
    print(
        f"{root} ({args.split}): {len(dicts)} frames, {len(videos)} videos, "
        f"{len({d['video_id'] for d in dicts})} segments, {sum(len(d['annotations']) for d in dicts)} boxes"
    )
    if args.to_json:
        image_root = args.image_root or root
        vid_ids = {v: i + 1 for i, v in enumerate(videos)}
        images, annos = [], []
        for i, d in enumerate(dicts):
            images.append(
                {
                    "id": i + 1,
                    "file_name": os.path.relpath(d["file_name"], image_root),
                    "height": d["height"],
                    "width": d["width"],
                    "video_id": vid_ids[d["video"]],
                    "frame_id": d["frame_index"],
                }
            )
            for a in d["annotations"]:
                x0, y0, x1, y1 = a["bbox"]
                annos.append(
                    {
                        "id": len(annos) + 1,
                        "image_id": i + 1,
                        "video_id": vid_ids[d["video"]],
                        "category_id": a["category_id"] + 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                )
        data = {
            "videos": [{"id": i, "name": v} for v, i in vid_ids.items()],
            "images": images,
            "annotations": annos,
            "categories": [
                {"id": i + 1, "name": n, "encode_name": w}
                for i, (w, n) in enumerate(VID_CATEGORIES)
            ],
        }
        atomic_write_json(data, args.to_json, indent=None)
        print(f"wrote {args.to_json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
