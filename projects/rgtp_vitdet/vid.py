"""ImageNet VID for detectron2: the 30 classes, loaders for the two on-disk layouts, and registration.

Layouts (see ``datasets/README.md``):

(a) ILSVRC2015 (the official release), under ``$RGTP_DATASETS/ILSVRC2015``::

        Data/VID/val/<video>/<frame:06d>.JPEG
        Annotations/VID/val/<video>/<frame:06d>.xml
        ImageSets/VID/val.txt          lines "<video>/<frame:06d> <index>"

(b) COCO-style JSON (the paper's data package, as written by e.g. mmtracking's ImageNet-VID converter), under
    ``$RGTP_DATASETS/vid``::

        annotations/vid_val.json       images (file_name, height, width, id, video_id, frame_id), annotations
                                       (image_id, category_id, bbox xywh), categories (id, name)
        Data/VID/val/<video>/<frame>.JPEG   (file_name is relative to the root)

Frames are grouped by video, ordered by frame number, and split into separate items (segments) wherever frame
numbers are not contiguous (docs/method.md §7). Each dataset dict has ``video_id`` = the segment (the video name, with a
``#k`` suffix for the k-th segment after a gap), ``frame_index``, ``file_name``, ``height``, ``width``, ``image_id``
and ``annotations`` (``bbox`` XYXY_ABS, ``category_id`` 0..29).
"""

from __future__ import annotations

import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from tqdm import tqdm

from rgtp.fileio import dataset_path, datasets_root

__all__ = [
    "VID_CLASSES",
    "VID_WNIDS",
    "DatasetError",
    "datasets_root",
    "load_vid_ilsvrc",
    "load_vid_json",
    "register_vid_ilsvrc",
    "register_vid_json",
    "register_all_vid",
    "segment_frames",
]

logger = logging.getLogger("detectron2.rgtp_vitdet.vid")

#: (WordNet id, name) of the 30 ImageNet VID classes, in the order of the devkit's map_vid.txt (category 0..29).
VID_CATEGORIES: Tuple[Tuple[str, str], ...] = (
    ("n02691156", "airplane"),
    ("n02419796", "antelope"),
    ("n02131653", "bear"),
    ("n02834778", "bicycle"),
    ("n01503061", "bird"),
    ("n02924116", "bus"),
    ("n02958343", "car"),
    ("n02402425", "cattle"),
    ("n02084071", "dog"),
    ("n02121808", "domestic_cat"),
    ("n02503517", "elephant"),
    ("n02118333", "fox"),
    ("n02510455", "giant_panda"),
    ("n02342885", "hamster"),
    ("n02374451", "horse"),
    ("n02129165", "lion"),
    ("n01674464", "lizard"),
    ("n02484322", "monkey"),
    ("n03790512", "motorcycle"),
    ("n02324045", "rabbit"),
    ("n02509815", "red_panda"),
    ("n02411705", "sheep"),
    ("n01726692", "snake"),
    ("n02355227", "squirrel"),
    ("n02129604", "tiger"),
    ("n04468005", "train"),
    ("n01662784", "turtle"),
    ("n04530566", "watercraft"),
    ("n02062744", "whale"),
    ("n02391049", "zebra"),
)
VID_WNIDS: Tuple[str, ...] = tuple(w for w, _ in VID_CATEGORIES)
VID_CLASSES: Tuple[str, ...] = tuple(n for _, n in VID_CATEGORIES)
_CLASS_INDEX: Dict[str, int] = {
    **{w: i for i, w in enumerate(VID_WNIDS)},
    **{n: i for i, n in enumerate(VID_CLASSES)},
}
_CLASS_INDEX.update({n.replace("_", " "): i for i, n in enumerate(VID_CLASSES)})

PREPARE_HINT = "see datasets/README.md (section 'ImageNet VID') and datasets/prepare_vid.py"


class DatasetError(RuntimeError):
    """The dataset on disk is missing or inconsistent; the message names the file, the frame or the key."""


def class_index(name: str, where: str) -> int:
    """Category 0..29 of a WordNet id or class name; a clear error naming ``where`` for unknown names."""
    key = name.strip()
    if key in _CLASS_INDEX:
        return _CLASS_INDEX[key]
    if key.lower() in _CLASS_INDEX:
        return _CLASS_INDEX[key.lower()]
    raise DatasetError(
        f"{where}: unknown ImageNet VID class {name!r}; allowed are the 30 WordNet ids {VID_WNIDS[0]}..."
        f" or names such as {VID_CLASSES[:3]} (the full list is rgtp_vitdet.vid.VID_CATEGORIES)"
    )


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DatasetError(
            f"ImageNet VID {what} not found: looked for the directory {os.path.abspath(path)!r} "
            f"(dataset root from $RGTP_DATASETS, else ./datasets). To prepare it, {PREPARE_HINT}."
        )


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise DatasetError(
            f"ImageNet VID {what} not found: looked for the file {os.path.abspath(path)!r} "
            f"(dataset root from $RGTP_DATASETS, else ./datasets). To prepare it, {PREPARE_HINT}."
        )


def segment_frames(frames: Sequence[dict]) -> List[dict]:
    """Group frame dicts (with ``video`` and ``frame_index``) by video, order them by frame number, and split every
    video at gaps in frame numbers. Sets ``video_id`` to ``<video>`` for the first segment and ``<video>#k`` for the
    k-th one after a gap. Returns the dicts in (video, frame) order. Duplicate frame numbers are an error.
    """
    by_video: Dict[str, List[dict]] = defaultdict(list)
    for f in frames:
        by_video[f["video"]].append(f)
    out: List[dict] = []
    for video in sorted(by_video):
        items = sorted(by_video[video], key=lambda d: d["frame_index"])
        seg = 0
        for i, d in enumerate(items):
            if i > 0:
                prev = items[i - 1]["frame_index"]
                if d["frame_index"] == prev:
                    raise DatasetError(
                        f"video {video!r}: frame number {prev} appears twice ({items[i - 1]['file_name']!r} and "
                        f"{d['file_name']!r})"
                    )
                if d["frame_index"] != prev + 1:
                    seg += 1
            d["video_id"] = video if seg == 0 else f"{video}#{seg}"
            out.append(d)
    return out


def _frame_number(stem: str, where: str) -> int:
    m = re.search(r"(\d+)$", stem)
    if m is None:
        raise DatasetError(
            f"{where}: cannot read a frame number from {stem!r} (expected e.g. 000123)"
        )
    return int(m.group(1))


def _parse_xml(path: str, frame: str) -> Tuple[Optional[Tuple[int, int]], List[dict]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"annotation {path!r} of frame {frame!r} is not valid XML: {e}") from e
    size = root.find("size")
    hw = None
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        hw = (int(size.findtext("height")), int(size.findtext("width")))
    annos = []
    for obj in root.findall("object"):
        name = obj.findtext("name", default="")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"annotation {path!r}: object {name!r} has no <bndbox>")
        try:
            x0, x1 = float(box.findtext("xmin")), float(box.findtext("xmax"))
            y0, y1 = float(box.findtext("ymin")), float(box.findtext("ymax"))
        except (TypeError, ValueError) as e:
            raise DatasetError(
                f"annotation {path!r}: object {name!r} has a malformed <bndbox>: {e}"
            ) from e
        if x1 < x0 or y1 < y0:
            raise DatasetError(
                f"annotation {path!r}: object {name!r} has an inverted box {(x0, y0, x1, y1)}"
            )
        annos.append(
            {
                "bbox": [x0, y0, x1, y1],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": class_index(name, f"annotation {path!r}"),
            }
        )
    return hw, annos


def _jpeg_size(path: str) -> Tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def load_vid_ilsvrc(root: str, split: str = "val") -> List[dict]:
    """Load the original ILSVRC2015 VID layout under ``root`` (the directory holding ``Data``, ``Annotations`` and
    ``ImageSets``) for ``split``; frames come from ``ImageSets/VID/<split>.txt`` (lines ``<video>/<frame> [index]``).

    Errors: a missing root, split file, frame JPEG or XML; an annotation for a frame that is not in the split; an
    unknown class name.
    """
    _require_dir(root, "root (ILSVRC2015 layout)")
    list_file = os.path.join(root, "ImageSets", "VID", f"{split}.txt")
    _require_file(list_file, f"split list for {split!r}")
    data_dir = os.path.join(root, "Data", "VID", split)
    anno_dir = os.path.join(root, "Annotations", "VID", split)
    _require_dir(data_dir, f"frames directory of {split!r}")
    _require_dir(anno_dir, f"annotations directory of {split!r}")
    with open(list_file) as f:
        entries = [ln.split()[0] for ln in f if ln.strip()]
    listed = set(entries)
    listed_videos = {e.split("/")[0] for e in entries}
    # Every annotation must belong to a listed frame (an XML without its frame is an inconsistency).
    for video in sorted(os.listdir(anno_dir)):
        vdir = os.path.join(anno_dir, video)
        if not os.path.isdir(vdir):
            continue
        if video not in listed_videos:
            continue
        for name in sorted(os.listdir(vdir)):
            if name.endswith(".xml") and f"{video}/{name[:-4]}" not in listed:
                raise DatasetError(
                    f"annotation {os.path.join(vdir, name)!r} is for frame {video}/{name[:-4]!r}, which does not "
                    f"exist in {list_file!r}"
                )
    frames = []
    for idx, entry in enumerate(tqdm(entries, desc=f"VID {split} (ILSVRC2015 XML)", leave=False)):
        video, stem = entry.rsplit("/", 1) if "/" in entry else (os.path.dirname(entry), entry)
        jpg = os.path.join(data_dir, video, stem + ".JPEG")
        xml = os.path.join(anno_dir, video, stem + ".xml")
        if not os.path.isfile(jpg):
            raise DatasetError(
                f"frame {entry!r} listed in {list_file!r}: the image {jpg!r} does not exist"
            )
        if not os.path.isfile(xml):
            raise DatasetError(
                f"frame {entry!r} listed in {list_file!r}: the annotation {xml!r} does not exist"
            )
        hw, annos = _parse_xml(xml, entry)
        if hw is None:
            hw = _jpeg_size(jpg)
        frames.append(
            {
                "file_name": jpg,
                "height": hw[0],
                "width": hw[1],
                "image_id": idx,
                "video": video,
                "frame_index": _frame_number(stem, f"{list_file!r}"),
                "annotations": annos,
            }
        )
    out = segment_frames(frames)
    _log_summary(out, f"{root} ({split}, ILSVRC2015 layout)")
    return out


_FRAME_KEYS = ("frame_id", "frame_index", "frame_number", "frame")


def load_vid_json(json_file: str, image_root: str) -> List[dict]:
    """Load the COCO-style JSON layout: ``json_file`` with ``images`` (``file_name`` relative to ``image_root``,
    ``height``, ``width``, ``id``, ``video_id`` and a frame number in ``frame_id``; when absent the video is the
    parent directory and the frame the file-name stem), ``annotations`` (``image_id``, ``category_id``, ``bbox``
    xywh) and ``categories`` (``id`` and ``name`` or ``encode_name``, a class name or WordNet id).

    Errors: a missing JSON or image root, a missing frame file, an annotation for an image id that does not exist,
    an unknown category name or id.
    """
    _require_file(json_file, "annotation file (COCO-style JSON layout)")
    _require_dir(image_root, "image root (COCO-style JSON layout)")
    with open(json_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{json_file!r} is not valid JSON: {e}") from e
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{json_file!r} has no {key!r} list (expected a COCO-style file)")
    cat_map: Dict[int, int] = {}
    for c in data["categories"]:
        names = [c.get("name"), c.get("encode_name")]
        hit = next(
            (
                n
                for n in names
                if n is not None and (n in _CLASS_INDEX or n.lower() in _CLASS_INDEX)
            ),
            None,
        )
        cat_map[int(c["id"])] = class_index(
            hit if hit is not None else str(c.get("name")), f"{json_file!r} categories"
        )
    videos = {v["id"]: v.get("name", str(v["id"])) for v in data.get("videos", [])}
    frames: Dict[int, dict] = {}
    for img in tqdm(data["images"], desc=f"VID {os.path.basename(json_file)} (JSON)", leave=False):
        path = os.path.join(image_root, img["file_name"])
        if not os.path.isfile(path):
            raise DatasetError(
                f"image id {img['id']} in {json_file!r}: the frame file {path!r} does not exist"
            )
        rel_dir, base = os.path.split(img["file_name"])
        stem = os.path.splitext(base)[0]
        if "video_id" in img:
            video = str(videos.get(img["video_id"], img["video_id"]))
        else:
            video = rel_dir
        fnum = next((img[k] for k in _FRAME_KEYS if k in img), None)
        fnum = (
            int(fnum)
            if fnum is not None
            else _frame_number(stem, f"image {img['file_name']!r} of {json_file!r}")
        )
        if img["id"] in frames:
            raise DatasetError(f"{json_file!r}: image id {img['id']} appears twice")
        frames[img["id"]] = {
            "file_name": path,
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img["id"],
            "video": video,
            "frame_index": fnum,
            "annotations": [],
        }
    for a in data["annotations"]:
        if a["image_id"] not in frames:
            raise DatasetError(
                f"{json_file!r}: annotation {a.get('id', '?')} is for image id {a['image_id']}, a frame that does "
                f"not exist in its 'images' list"
            )
        if a["category_id"] not in cat_map:
            raise DatasetError(
                f"{json_file!r}: annotation {a.get('id', '?')} has category_id {a['category_id']}, which is not in "
                f"its 'categories' list {sorted(cat_map)}"
            )
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        frames[a["image_id"]]["annotations"].append(
            {
                "bbox": [x, y, x + w, y + h],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": cat_map[a["category_id"]],
            }
        )
    out = segment_frames(list(frames.values()))
    _log_summary(out, f"{json_file} (COCO-style JSON layout)")
    return out


def _log_summary(dicts: List[dict], where: str) -> None:
    segs = {d["video_id"] for d in dicts}
    vids = {d["video"] for d in dicts}
    boxes = sum(len(d["annotations"]) for d in dicts)
    logger.info(
        f"Loaded {len(dicts)} frames of {len(vids)} videos ({len(segs)} segments), {boxes} boxes from {where}"
    )


def _set_metadata(name: str, **kw: object) -> None:
    MetadataCatalog.get(name).set(
        thing_classes=list(VID_CLASSES), thing_wnids=list(VID_WNIDS), evaluator_type="vid", **kw
    )


def register_vid_ilsvrc(
    name: str, root: Optional[str] = None, split: str = "val", subdir: str = "ILSVRC2015"
) -> None:
    """Register ``name`` as the ILSVRC2015-layout split; the root (``root``, else ``$RGTP_DATASETS/<subdir>``)
    is resolved when the dataset is first loaded, so the environment variable may be set later."""

    def _load() -> List[dict]:
        return load_vid_ilsvrc(root or dataset_path(subdir), split)

    DatasetCatalog.register(name, _load)
    _set_metadata(name, layout="ilsvrc", split=split)


def register_vid_json(
    name: str,
    json_file: Optional[str] = None,
    image_root: Optional[str] = None,
    subdir: str = "vid",
    split: str = "val",
) -> None:
    """Register ``name`` as a COCO-style JSON split; default paths are ``$RGTP_DATASETS/<subdir>/annotations/
    vid_<split>.json`` with images under ``$RGTP_DATASETS/<subdir>``, resolved when the dataset is first loaded.
    """

    def _load() -> List[dict]:
        base = dataset_path(subdir)
        return load_vid_json(
            json_file or os.path.join(base, "annotations", f"vid_{split}.json"), image_root or base
        )

    DatasetCatalog.register(name, _load)
    _set_metadata(name, layout="json", split=split)


def register_all_vid() -> None:
    """Register the built-in names: ``vid_val`` / ``vid_train`` (ILSVRC2015 layout), ``vid_val_json`` /
    ``vid_train_json`` (COCO-style JSON layout) and ``vid_val_cuts`` / ``vid_train_cuts`` (ILSVRC2015 layout under
    ``$RGTP_DATASETS/ILSVRC2015_cuts``: the generated demo videos with shot cuts, docs/demo_data.md).
    """
    for split in ("val", "train"):
        if f"vid_{split}" not in DatasetCatalog.list():
            register_vid_ilsvrc(f"vid_{split}", split=split)
        if f"vid_{split}_json" not in DatasetCatalog.list():
            register_vid_json(f"vid_{split}_json", split=split)
        if f"vid_{split}_cuts" not in DatasetCatalog.list():
            register_vid_ilsvrc(f"vid_{split}_cuts", split=split, subdir="ILSVRC2015_cuts")
