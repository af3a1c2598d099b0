"""Tests of the embedded demo data generator (:mod:`rgtp_apps.demo_data`, command line ``datasets/prepare_demo.py``),
on its cut-down ``small`` version.

They check the on-disk formats (ILSVRC2015 VID XML + JPEG + ImageSets lists; Kinetics mp4 + CSV), the content
properties the demo relies on (boxes inside the frame, occlusion, truncation, objects entering or leaving, every
action class in both splits), byte-for-byte determinism, and the skip / force / atomic-write behaviour.
"""

import csv
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import av
import pytest
from PIL import Image
from rgtp_apps import demo_data as pd

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "datasets" / "prepare_demo.py"

#: The 30 ImageNet VID WordNet ids (devkit map_vid.txt); the demo classes must be among them.
VID_WNIDS = {
    "n02691156", "n02419796", "n02131653", "n02834778", "n01503061", "n02924116", "n02958343", "n02402425",
    "n02084071", "n02121808", "n02503517", "n02118333", "n02510455", "n02342885", "n02374451", "n02129165",
    "n01674464", "n02484322", "n03790512", "n02324045", "n02509815", "n02411705", "n01726692", "n02355227",
    "n02129604", "n04468005", "n01662784", "n04530566", "n02062744", "n02391049",
}  # fmt: skip
KINETICS_HEADER = "label,youtube_id,time_start,time_end,split"


SPEC = pd.demo_spec(small=True)
CUT_SPEC = pd.cut_spec(small=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The small demo data, generated once for the module: (root, paths)."""
    root = tmp_path_factory.mktemp("demo_data")
    paths = pd.prepare_demo(str(root), small=True, progress=False)
    return root, paths


def _read_list(path):
    with open(path) as f:
        return [ln.rstrip("\n") for ln in f]


def test_vid_layout_and_image_sets(demo):
    root, paths = demo
    base = Path(paths["vid_root"])
    assert base == root / "demo_vid" / "ILSVRC2015"
    for split, n_snippets in (("train", SPEC.vid_train), ("val", SPEC.vid_val)):
        lines = _read_list(base / "ImageSets" / "VID" / f"{split}.txt")
        assert len(lines) == n_snippets * SPEC.vid_frames
        entries = []
        for k, line in enumerate(lines, start=1):
            m = re.fullmatch(rf"(ILSVRC2015_{split}_\d{{8}})/(\d{{6}}) (\d+)", line)
            assert m, f"bad {split}.txt line {line!r}"
            assert int(m.group(3)) == k
            entries.append((m.group(1), m.group(2)))
            assert (base / "Data" / "VID" / split / m.group(1) / f"{m.group(2)}.JPEG").is_file()
            assert (
                base / "Annotations" / "VID" / split / m.group(1) / f"{m.group(2)}.xml"
            ).is_file()
        on_disk = {
            (p.parent.name, p.stem)
            for p in (base / "Data" / "VID" / split).glob("*/*")
            if p.is_file()
        }
        assert on_disk == set(entries), "every frame on disk is listed, and only those"
        assert len({s for s, _ in entries}) == n_snippets


def _parse_annotation(path):
    root = ET.parse(path).getroot()
    assert root.tag == "annotation"
    size = root.find("size")
    objs = []
    for o in root.findall("object"):
        box = o.find("bndbox")
        objs.append(
            {
                "trackid": int(o.findtext("trackid")),
                "name": o.findtext("name"),
                "box": tuple(int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
                "occluded": o.findtext("occluded"),
                "generated": o.findtext("generated"),
            }
        )
    return {
        "folder": root.findtext("folder"),
        "filename": root.findtext("filename"),
        "database": root.findtext("source/database"),
        "width": int(size.findtext("width")),
        "height": int(size.findtext("height")),
        "objects": objs,
    }


def test_vid_frames_and_annotations(demo):
    _, paths = demo
    base = Path(paths["vid_root"])
    n_occluded = n_border = n_boxes = 0
    classes = set()
    enter_or_leave = 0
    for split in ("train", "val"):
        for snippet in sorted((base / "Annotations" / "VID" / split).iterdir()):
            present = defaultdict(set)
            xmls = sorted(snippet.glob("*.xml"))
            for t, xml in enumerate(xmls):
                ann = _parse_annotation(xml)
                assert ann["folder"] == snippet.name and ann["filename"] == xml.stem
                assert ann["database"] == "ILSVRC_2015"
                jpg = base / "Data" / "VID" / split / snippet.name / f"{xml.stem}.JPEG"
                with Image.open(jpg) as im:
                    assert im.format == "JPEG" and im.mode == "RGB"
                    assert (
                        im.size
                        == (ann["width"], ann["height"])
                        == (SPEC.vid_width, SPEC.vid_height)
                    )
                    im.load()  # decodes the whole file
                w, h = ann["width"], ann["height"]
                for o in ann["objects"]:
                    x0, y0, x1, y1 = o["box"]
                    assert (
                        0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1
                    ), f"{xml}: box {o['box']}"
                    assert x1 - x0 >= 3 and y1 - y0 >= 3
                    assert o["name"] in VID_WNIDS
                    assert o["occluded"] in ("0", "1") and o["generated"] == "0"
                    assert o["trackid"] not in present or t not in present[o["trackid"]]
                    present[o["trackid"]].add(t)
                    classes.add(o["name"])
                    n_boxes += 1
                    n_occluded += o["occluded"] == "1"
                    n_border += x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1
            enter_or_leave += sum(len(frames) < len(xmls) for frames in present.values())
    assert n_boxes > 0
    assert n_occluded > 0, "some objects must be occluded by others"
    assert n_border > 0, "some objects must be cut by the frame border"
    assert enter_or_leave > 0, "some objects must enter or leave the frame"
    assert len(classes) >= 3
    assert classes <= {c.wnid for c in pd.shapes.OBJECT_CLASSES}


def test_kinetics_csv_and_videos(demo):
    root, paths = demo
    kin = Path(paths["kinetics_root"])
    classes = set(pd.shapes.ACTION_CLASSES)
    assert _read_list(paths["kinetics_classes"]) == sorted(classes)
    duration = SPEC.clip_frames // SPEC.clip_fps
    for split, csv_name, per_class in (
        ("train", "train.csv", SPEC.clips_train_per_class),
        ("val", "validate.csv", SPEC.clips_val_per_class),
    ):
        text = (kin / csv_name).read_text()
        assert text.split("\n", 1)[0] == KINETICS_HEADER
        assert (kin / "annotations" / f"{split}.csv").read_text() == text
        with open(kin / csv_name, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == per_class * len(classes)
        assert {r["label"] for r in rows} == classes, f"every action class in {split}"
        listed = set()
        for r in rows:
            assert r["split"] == split
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{10}", r["youtube_id"])
            t0, t1 = int(r["time_start"]), int(r["time_end"])
            assert t1 - t0 == duration
            name = f"{r['youtube_id']}_{t0:06d}_{t1:06d}.mp4"
            listed.add(name)
            path = kin / "videos" / split / name
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264"
                assert stream.average_rate == 25
                assert (stream.width, stream.height) == (SPEC.clip_size, SPEC.clip_size)
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert len(frames) == SPEC.clip_frames
            assert frames[0].shape == (SPEC.clip_size, SPEC.clip_size, 3)
            assert frames[0].std() > 5, "a textured frame, not a flat one"
        assert {p.name for p in (kin / "videos" / split).iterdir()} == listed


def test_generation_is_byte_identical(demo, tmp_path):
    root, _ = demo
    pd.prepare_demo(str(tmp_path), small=True, progress=False)
    for name in (pd.VID_DIR, pd.KINETICS_DIR, os.path.join(pd.VID_DIR, pd.VID_CUTS_DIR)):
        a, b = pd.read_marker(str(root / name)), pd.read_marker(str(tmp_path / name))
        assert a["files"] == b["files"]
        assert (
            a["content_hash"]
            == b["content_hash"]
            == pd.content_hash(pd._manifest(str(tmp_path / name)))
        )
    for rel in ("ILSVRC2015/ImageSets/VID/val.txt",):
        assert (root / pd.VID_DIR / rel).read_bytes() == (tmp_path / pd.VID_DIR / rel).read_bytes()


def test_skip_repair_and_force(tmp_path):
    pd.prepare_demo(str(tmp_path), small=True, progress=False)
    marker = tmp_path / pd.VID_DIR / pd.MARKER
    kin_marker = tmp_path / pd.KINETICS_DIR / pd.MARKER
    before = marker.stat().st_mtime_ns, kin_marker.stat().st_mtime_ns
    pd.prepare_demo(str(tmp_path), small=True, progress=False)
    assert (
        marker.stat().st_mtime_ns,
        kin_marker.stat().st_mtime_ns,
    ) == before, "complete data are skipped"

    victim = next(
        (tmp_path / pd.VID_DIR / "ILSVRC2015" / "Data" / "VID" / "val").glob("*/000000.JPEG")
    )
    victim.unlink()
    assert not pd.is_complete(str(tmp_path / pd.VID_DIR), SPEC)
    pd.prepare_demo(str(tmp_path), small=True, progress=False)
    assert victim.is_file() and pd.is_complete(str(tmp_path / pd.VID_DIR), SPEC, verify=True)
    assert kin_marker.stat().st_mtime_ns == before[1], "only the broken data set is rebuilt"

    old_hash = pd.read_marker(str(tmp_path / pd.KINETICS_DIR))["content_hash"]
    pd.prepare_demo(str(tmp_path), small=True, force=True, progress=False)
    assert kin_marker.stat().st_mtime_ns != before[1]
    assert pd.read_marker(str(tmp_path / pd.KINETICS_DIR))["content_hash"] == old_hash
    # A full-size spec does not accept the small data.
    assert not pd.is_complete(str(tmp_path / pd.VID_DIR), pd.demo_spec(small=False))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_failure_keeps_previous_data(tmp_path, monkeypatch):
    pd.prepare_demo(str(tmp_path), small=True, progress=False)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(pd.shapes, "render_action_clip", boom)
    with pytest.raises(RuntimeError, match="simulated failure"):
        pd.prepare_demo(str(tmp_path), small=True, force=True, progress=False)
    assert pd.is_complete(str(tmp_path / pd.KINETICS_DIR), SPEC, verify=True)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_command_line(tmp_path):
    env = {**os.environ, "RGTP_DATASETS": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--small"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert pd.is_complete(str(tmp_path / pd.VID_DIR), SPEC)
    assert pd.main(["--root", str(tmp_path), "--small", "--verify"]) == 0
    jpg = next((tmp_path / pd.VID_DIR).rglob("000001.JPEG"))
    data = bytearray(jpg.read_bytes())
    data[len(data) // 2] ^= 1  # same size, other bytes: only the sha256 check sees it
    jpg.write_bytes(bytes(data))
    assert pd.is_complete(str(tmp_path / pd.VID_DIR), SPEC)
    assert pd.main(["--root", str(tmp_path), "--small", "--verify"]) == 1


def test_project_loaders_read_the_demo(demo):
    """The real-data loaders of both projects read the demo data as they are (contract with the projects)."""
    _, paths = demo
    vid = pytest.importorskip("rgtp_vitdet.vid")
    for split, n in (("train", SPEC.vid_train), ("val", SPEC.vid_val)):
        dicts = vid.load_vid_ilsvrc(paths["vid_root"], split)
        assert len(dicts) == n * SPEC.vid_frames
        assert {d["video_id"] for d in dicts} == {f"ILSVRC2015_{split}_{i:08d}" for i in range(n)}
        wanted = {vid.VID_WNIDS.index(c.wnid) for c in pd.shapes.OBJECT_CLASSES}
        assert {a["category_id"] for d in dicts for a in d["annotations"]} <= wanted
    config = pytest.importorskip("rgtp_vivit.config")
    datasets = pytest.importorskip("rgtp_vivit.datasets")
    cfg = config.get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = paths["kinetics_root"]
    cfg.DATA.VIDEO_DIR = "videos/{split}"
    cfg.MODEL.NUM_CLASSES = len(
        pd.shapes.ACTION_CLASSES
    )  # the label indices come from the annotation file
    for split in ("train", "val"):
        ds = datasets.Kinetics(cfg, split)
        assert list(ds.classes) == sorted(pd.shapes.ACTION_CLASSES)
        assert all(os.path.isfile(r.path) for r in ds.records)


# ------------------------------------------------------------------------------------------- videos with cuts
def test_vid_cuts_layout_and_cut_lists(demo):
    root, paths = demo
    base = Path(paths["vid_cuts_root"])
    assert base == root / "demo_vid" / "ILSVRC2015_cuts"
    for split, n_videos in (("train", CUT_SPEC.train), ("val", CUT_SPEC.val)):
        lines = _read_list(base / "ImageSets" / "VID" / f"{split}.txt")
        assert len(lines) == n_videos * CUT_SPEC.frames
        videos = sorted({ln.split("/")[0] for ln in lines})
        assert videos == [pd.cut_snippet_name(split, i) for i in range(n_videos)]
        cuts = pd.read_cut_frames(paths[f"vid_cuts_{split}_cuts"])
        assert sorted(cuts) == videos, "every video has at least one cut"
        for video, frames in cuts.items():
            bounds = [0] + frames + [CUT_SPEC.frames]
            shots = [b - a for a, b in zip(bounds, bounds[1:])]
            assert min(shots) >= CUT_SPEC.min_shot
            xmls = sorted((base / "Annotations" / "VID" / split / video).glob("*.xml"))
            assert len(xmls) == CUT_SPEC.frames
            for t, xml in enumerate(xmls):
                shot = sum(t >= c for c in frames)
                for o in _parse_annotation(xml)["objects"]:
                    # objects of different shots are different tracks
                    assert shot * 10 <= o["trackid"] < shot * 10 + 3, (xml, o)


def test_cut_videos_are_a_data_set_of_their_own(demo):
    """The cut videos sit inside demo_vid but neither its manifest nor its content hash includes them."""
    root, _ = demo
    vid = pd.read_marker(str(root / pd.VID_DIR))
    assert not [f for f in vid["files"] if f.startswith(pd.VID_CUTS_DIR + "/")]
    assert vid["content_hash"] == pd.content_hash(pd._manifest(str(root / pd.VID_DIR)))
    cuts = pd.read_marker(str(root / pd.VID_DIR / pd.VID_CUTS_DIR))
    assert cuts["spec_hash"] == CUT_SPEC.digest() != SPEC.digest()
    assert cuts["stats"]["cuts"] == sum(
        len(v)
        for s in ("train", "val")
        for v in pd.read_cut_frames(
            str(root / pd.VID_DIR / pd.VID_CUTS_DIR / "ImageSets" / "VID" / f"{s}_cuts.txt")
        ).values()
    )


def test_project_loader_reads_the_cut_splits(demo, monkeypatch):
    """``vid_{train,val}_cuts`` are registered by rgtp_vitdet under ``$RGTP_DATASETS/ILSVRC2015_cuts``."""
    _, paths = demo
    pytest.importorskip("rgtp_vitdet")
    from detectron2.data import DatasetCatalog

    monkeypatch.setenv("RGTP_DATASETS", paths["vid_dir"])
    for split, n in (("train", CUT_SPEC.train), ("val", CUT_SPEC.val)):
        dicts = DatasetCatalog.get(f"vid_{split}_cuts")
        assert len(dicts) == n * CUT_SPEC.frames
        assert {d["video_id"] for d in dicts} == {pd.cut_snippet_name(split, i) for i in range(n)}
