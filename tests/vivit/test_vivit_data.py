"""PyAV decoding, the 12-view transform and the datasets, including every kind of bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from rgtp_vivit.datasets import Epickitchens, Kinetics
from rgtp_vivit.test_net import test as run_test
from rgtp_vivit.video import VideoError, decode_video, make_views, spatial_offsets, temporal_starts
from vivit_helpers import TINY_EPIC, TINY_KINETICS, cfg_from, epic_row, make_epic, write_video


def _k_cfg(root, *opts):
    return cfg_from(
        ["configs/kinetics/keep_049.yaml"],
        TINY_KINETICS + ["DATA.PATH_TO_DATA_DIR", str(root), *opts],
    )


def _e_cfg(root, *opts):
    return cfg_from(
        ["configs/epic/fg_120_bg_005.yaml"], TINY_EPIC + ["DATA.PATH_TO_DATA_DIR", str(root), *opts]
    )


def test_decode_resamples_and_cuts_segments(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, 30, fps=30)
    video, fps = decode_video(str(path))
    assert video.shape == (30, 72, 96, 3) and video.dtype == np.uint8 and fps == 30
    video25, fps25 = decode_video(str(path), target_fps=25)
    assert fps25 == 25 and video25.shape[0] == 25
    seg, _ = decode_video(str(path), start=0.2, stop=0.5)
    assert seg.shape[0] == 9
    np.testing.assert_array_equal(seg[0], video[6])


def test_view_geometry():
    assert temporal_starts(100, 64, 4) == [0, 12, 24, 36]
    assert temporal_starts(40, 64, 4) == [0, 0, 0, 0]
    assert spatial_offsets(398, 224, 3) == [0, 87, 174]
    video = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 72, 96, 3), dtype=np.uint8
    )
    views = make_views(video, 8, 2, 4, 3, 64, 64, [0.0] * 3, [1.0] * 3)
    assert views.shape == (12, 3, 8, 64, 64)
    # 20 frames, span 16: temporal starts int(k * 4 / 3) = 0, 1, 2, 4 (pixel value = frame index)
    assert [round(float(views[3 * k, 0, 0, 0, 0]) * 255) for k in range(4)] == [0, 1, 2, 4]


def test_kinetics_items_and_short_clip(kinetics_root):
    ds = Kinetics(_k_cfg(kinetics_root), "val")
    assert len(ds) == 5 and ds.classes == ["abseiling", "bowling", "cooking egg"]
    assert [r.label for r in ds.records] == [0, 1, 2, 0, 1]
    item = ds[0]
    assert item["error"] is None and item["views"].shape == (12, 3, 8, 64, 64)
    # three spatial crops of one temporal view differ (64x85 frame)
    assert not torch.equal(item["views"][0], item["views"][2])
    short = ds[4]["views"]  # 10 frames < 16: the last frame is repeated
    assert short.shape == (12, 3, 8, 64, 64)
    for j in (6, 7):  # frame indices 12, 14 -> 9 (the last), like j = 5 (10 -> 9)
        torch.testing.assert_close(short[:, :, j], short[:, :, 5])
    assert not torch.allclose(short[:, :, 4], short[:, :, 5])  # frame 8 is a real, different frame


def test_epic_items(epic_root):
    ds = Epickitchens(_e_cfg(epic_root), "val")
    assert [(r.key, r.label, r.noun) for r in ds.records][:2] == [
        ("P01_01_0", 0, 1),
        ("P01_01_1", 3, 2),
    ]
    assert ds.records[0].start == pytest.approx(0.1) and ds.records[0].stop == pytest.approx(1.2)
    item = ds[2]  # 9-frame segment, shorter than a view
    assert item["error"] is None and item["views"].shape == (12, 3, 8, 64, 64)


def test_csv_with_missing_columns(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "val.csv").write_text(
        "label,youtube_id,time_start\nbowling,abc,0\n"
    )
    with pytest.raises(ValueError, match=r"val\.csv: missing column\(s\) \['time_end', 'split'\]"):
        Kinetics(_k_cfg(tmp_path), "val")


def test_epic_stop_before_start(tmp_path):
    make_epic(tmp_path, rows=[epic_row("P01_01_7", "P01_01", "00:00:02.00", "00:00:01.00", 0, 0)])
    with pytest.raises(ValueError, match="P01_01_7.*stop_timestamp 00:00:01.00 is not after"):
        Epickitchens(_e_cfg(tmp_path / "epic"), "val")


def test_epic_segment_past_the_end(tmp_path, caplog):
    rows = [
        epic_row("P01_01_0", "P01_01", "00:00:00.10", "00:00:01.20", 0, 1),
        epic_row("P01_01_9", "P01_01", "00:00:02.00", "00:00:09.00", 1, 1),
    ]
    root = make_epic(tmp_path, rows=rows)
    with pytest.raises(
        VideoError, match=r"stops past the end of .*P01_01\.mp4 \(duration 3\.000s\)"
    ):
        Epickitchens(_e_cfg(root, "DATA.STRICT", "True"), "val")[1]
    cfg = _e_cfg(root, "OUTPUT_DIR", str(tmp_path / "out"))
    with caplog.at_level(logging.WARNING):
        res = run_test(cfg)
    assert res["num_videos"] == 1 and [s["key"] for s in res["skipped"]] == ["P01_01_9"]
    assert "skipped 1 missing or unusable videos: P01_01_9" in caplog.text


def test_missing_and_corrupt_videos(tmp_path, kinetics_root, caplog):
    import shutil

    root = tmp_path / "k"
    shutil.copytree(kinetics_root, root)
    (root / "val" / "vid01-b_x_000010_000011.mp4").unlink()
    (root / "val" / "vid02-c_x_000020_000021.mp4").write_bytes(b"\x00not a video" * 50)
    cfg = _k_cfg(root, "OUTPUT_DIR", str(tmp_path / "out"))
    with caplog.at_level(logging.WARNING):
        res = run_test(cfg)
    assert res["num_videos"] == 3
    assert sorted(s["key"] for s in res["skipped"]) == [
        "vid01-b_x_000010_000011",
        "vid02-c_x_000020_000021",
    ]
    assert "missing video file" in caplog.text and "vid02-c_x_000020_000021.mp4" in caplog.text
    strict = _k_cfg(root, "OUTPUT_DIR", str(tmp_path / "out2"), "DATA.STRICT", "True")
    with pytest.raises(VideoError, match="missing video file: .*vid01-b_x_000010_000011.mp4"):
        run_test(strict)
    assert not (tmp_path / "out2" / "results.json").exists()
