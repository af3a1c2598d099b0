"""VID datasets in both layouts, the video sampler, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from rgtp_vitdet.data import (
    VideoBatchSampler,
    VideoInferenceSampler,
    VIDTestMapper,
    assign_videos,
    resized_shape,
)
from rgtp_vitdet.vid import DatasetError, load_vid_ilsvrc, load_vid_json
from vitdet_helpers import DEFAULT_SPEC, tiny_cfg, write_ilsvrc, write_json


def _load_both(root: Path):
    a = load_vid_ilsvrc(str(root / "ILSVRC2015"), "val")
    b = load_vid_json(str(root / "vid" / "annotations" / "vid_val.json"), str(root / "vid"))
    return a, b


def test_both_layouts_give_the_same_frames(vid_root):
    a, b = _load_both(vid_root)
    assert len(a) == len(b) == sum(len(v) for v in DEFAULT_SPEC.values())
    for x, y in zip(a, b):
        assert (x["video_id"], x["frame_index"]) == (y["video_id"], y["frame_index"])
        assert [z["category_id"] for z in x["annotations"]] == [
            z["category_id"] for z in y["annotations"]
        ]
        np.testing.assert_allclose(
            [z["bbox"] for z in x["annotations"]], [z["bbox"] for z in y["annotations"]]
        )
    # n02419796 (antelope) is class 1 of the devkit's order
    assert {z["category_id"] for d in a for z in d["annotations"]} == {0, 1, 2, 3}


def test_frames_ordered_and_split_at_gaps(vid_root):
    a, _ = _load_both(vid_root)
    segs = {}
    for d in a:
        segs.setdefault(d["video_id"], []).append(d["frame_index"])
    assert segs["ILSVRC2015_val_00002000"] == [0, 1, 2, 3]
    assert segs["ILSVRC2015_val_00002000#1"] == [6, 7, 8]
    assert segs["ILSVRC2015_val_00000000"] == list(range(10))
    assert len(segs) == 5


def test_sampler_whole_videos_balanced():
    lengths = {"a": 10, "b": 6, "c": 4, "d": 3, "e": 5}
    parts = assign_videos(lengths, 2)
    assert sorted(v for p in parts for v in p) == sorted(lengths)
    loads = [sum(lengths[v] for v in p) for p in parts]
    assert loads == [14, 14]  # a10->0, b6->1, e5->1, c4->0, d3->1
    assert max(loads) - min(loads) <= max(lengths.values())


def test_sampler_and_batches_keep_frame_order(vid_root):
    a, _ = _load_both(vid_root)
    seen = []
    for rank in range(2):
        s = VideoInferenceSampler(a, rank=rank, world_size=2)
        idx = list(s)
        seen += idx
        for vid in s.videos:
            frames = [a[i]["frame_index"] for i in idx if a[i]["video_id"] == vid]
            assert frames == sorted(frames)
        batches = list(VideoBatchSampler(s, 2))
        assert sorted(i for b in batches for i in b) == sorted(idx)
        for b in batches:
            assert len({a[i]["video_id"] for i in b}) == len(b)  # one frame per video in a batch
        order = [i for b in batches for i in b]
        for vid in s.videos:
            fr = [a[i]["frame_index"] for i in order if a[i]["video_id"] == vid]
            assert fr == sorted(fr)
    assert sorted(seen) == list(range(len(a)))  # every frame exactly once over both ranks


def test_test_resize_and_mapper(vid_root):
    assert resized_shape(720, 1280, 420, 672) == (378, 672)  # docs/method.md §7 example
    assert resized_shape(720, 1280, 640, 1024) == (576, 1024)
    a, _ = _load_both(vid_root)
    out = VIDTestMapper(tiny_cfg())(a[0])
    assert tuple(out["image"].shape) == (3, 77, 128)  # 96x160 -> short 80 would give long 133 > 128
    assert out["video_id"] == a[0]["video_id"] and out["height"] == 96


# ------------------------------------------------------------------------------------------ bad input
@pytest.fixture()
def fresh(tmp_path):
    write_ilsvrc(tmp_path, {"ILSVRC2015_val_00000000": [0, 1, 2]})
    write_json(tmp_path, {"ILSVRC2015_val_00000000": [0, 1, 2]})
    return tmp_path


def test_missing_root_says_where_and_how(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_vid_ilsvrc(str(tmp_path / "nowhere" / "ILSVRC2015"))
    msg = str(e.value)
    assert (
        str(tmp_path / "nowhere" / "ILSVRC2015") in msg
        and "datasets/README.md" in msg
        and "RGTP_DATASETS" in msg
    )
    with pytest.raises(DatasetError, match="vid_val.json"):
        load_vid_json(str(tmp_path / "vid" / "annotations" / "vid_val.json"), str(tmp_path))


def test_registered_name_uses_env_root(tmp_path, monkeypatch):
    import rgtp_vitdet  # noqa: F401  (registers the names)
    from detectron2.data import DatasetCatalog

    monkeypatch.setenv("RGTP_DATASETS", str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="empty"):
        DatasetCatalog.get("vid_val")


def test_missing_frame_file(fresh):
    os.remove(fresh / "ILSVRC2015/Data/VID/val/ILSVRC2015_val_00000000/000001.JPEG")
    with pytest.raises(DatasetError, match=r"ILSVRC2015_val_00000000/000001.*does not exist"):
        load_vid_ilsvrc(str(fresh / "ILSVRC2015"))
    os.remove(fresh / "vid/Data/VID/val/ILSVRC2015_val_00000000/000002.JPEG")
    with pytest.raises(DatasetError, match=r"000002.JPEG' does not exist"):
        load_vid_json(str(fresh / "vid/annotations/vid_val.json"), str(fresh / "vid"))


def test_annotation_for_missing_frame(fresh):
    # ILSVRC: an XML file whose frame is not in the split list
    src = fresh / "ILSVRC2015/Annotations/VID/val/ILSVRC2015_val_00000000/000000.xml"
    shutil.copy(src, src.with_name("000007.xml"))
    with pytest.raises(DatasetError, match=r"000007.*does not exist"):
        load_vid_ilsvrc(str(fresh / "ILSVRC2015"))
    # JSON: an annotation whose image id is not among the images
    path = fresh / "vid/annotations/vid_val.json"
    data = json.loads(path.read_text())
    data["annotations"].append(dict(data["annotations"][0], id=99, image_id=12345))
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"image id 12345, a frame that does not exist"):
        load_vid_json(str(path), str(fresh / "vid"))


def test_unknown_class_name(fresh):
    xml = fresh / "ILSVRC2015/Annotations/VID/val/ILSVRC2015_val_00000000/000001.xml"
    xml.write_text(xml.read_text().replace("<name>n02691156</name>", "<name>n99999999</name>"))
    with pytest.raises(DatasetError, match=r"000001.xml.*unknown ImageNet VID class 'n99999999'"):
        load_vid_ilsvrc(str(fresh / "ILSVRC2015"))
    path = fresh / "vid/annotations/vid_val.json"
    data = json.loads(path.read_text())
    data["categories"][0] = {"id": 1, "name": "unicorn"}
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="unknown ImageNet VID class 'unicorn'"):
        load_vid_json(str(path), str(fresh / "vid"))


def test_corrupt_jpeg(fresh):
    dicts = load_vid_ilsvrc(str(fresh / "ILSVRC2015"))
    Path(dicts[1]["file_name"]).write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(
        DatasetError, match=r"000001.JPEG.*video 'ILSVRC2015_val_00000000', frame 1.*corrupt JPEG"
    ):
        VIDTestMapper(tiny_cfg())(dicts[1])
    VIDTestMapper(tiny_cfg())(dicts[0])  # the intact frame still reads


def test_prepare_vid_exports_json_that_loads_identically(vid_root, tmp_path):
    import subprocess
    import sys

    from vitdet_helpers import REPO

    out = tmp_path / "annotations" / "vid_val.json"
    root = vid_root / "ILSVRC2015"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "datasets/prepare_vid.py"),
            "--root",
            str(root),
            "--to-json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "28 frames, 4 videos, 5 segments" in proc.stdout
    a = load_vid_ilsvrc(str(root))
    b = load_vid_json(str(out), str(root))
    assert [(d["video_id"], d["frame_index"], d["file_name"]) for d in a] == [
        (d["video_id"], d["frame_index"], d["file_name"]) for d in b
    ]
    assert [d["annotations"] for d in a] == [d["annotations"] for d in b]
