"""Issue 13, detection: a run either measures what was asked for or says clearly why not (cases 5-8 of the issue,
on data written here)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from vitdet_helpers import REPO, TINY, run_train_net, tiny_cfg, write_ilsvrc


def _prepare_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "datasets/prepare_vid.py", "--check", "--root", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


# ------------------------------------------------------------------------------------------------ case 5
def test_case5_check_reads_every_frame_like_the_evaluation(tmp_path):
    base = write_ilsvrc(tmp_path)
    ok = _prepare_check(base)
    assert ok.returncode == 0, ok.stderr[-2000:]
    jpg = sorted((base / "Data" / "VID" / "val").rglob("*.JPEG"))[3]
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 3])  # a truncated JPEG: its header (and size) still reads
    bad = _prepare_check(base)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert "error:" in bad.stderr and jpg.name in bad.stderr


def test_case5_check_compares_the_xml_size_with_the_jpeg(tmp_path):
    base = write_ilsvrc(tmp_path)
    xml = sorted((base / "Annotations" / "VID" / "val").rglob("*.xml"))[2]
    xml.write_text(re.sub(r"<width>\d+</width>", "<width>321</width>", xml.read_text()))
    bad = _prepare_check(base)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert "321" in bad.stderr and xml.stem in bad.stderr


# ------------------------------------------------------------------------------------------------ case 6
def test_case6_no_ground_truth_gives_null_with_a_reason_and_strict_json(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Boxes, Instances
    from rgtp_vitdet.engine import atomic_write_json, check_measured
    from rgtp_vitdet.evaluator import VIDEvaluator
    from rgtp_vitdet.vid import VID_CLASSES

    name = "vid_issue13_no_gt"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(
            name,
            lambda: [
                {"image_id": i, "video_id": "v", "frame_index": i, "annotations": []}
                for i in range(2)
            ],
        )
        MetadataCatalog.get(name).set(thing_classes=list(VID_CLASSES))
    ev = VIDEvaluator(name, distributed=False)
    ev.reset()
    for i in range(2):
        inst = Instances((10, 10))
        inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
        inst.scores = torch.tensor([0.9])
        inst.pred_classes = torch.tensor([0])
        ev.process([{"image_id": i, "video_id": "v", "frame_index": i}], [{"instances": inst}])
    res = ev.evaluate()
    assert res["bbox"]["AP50"] is None and "ground-truth" in res["bbox"]["AP50_reason"]
    assert res["bbox"]["AP50-airplane"] is None
    path = tmp_path / "results.json"
    atomic_write_json(res, str(path))
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    with pytest.raises(ValueError):
        atomic_write_json({"AP50": float("nan")}, str(tmp_path / "nan.json"))
    from rgtp.cli import UserError

    with pytest.raises(UserError, match="ground-truth"):
        check_measured({name: res})


# ------------------------------------------------------------------------------------------------ case 7
def test_case7_predictor_resets_by_itself_on_a_new_frame_size(caplog):
    from rgtp_vitdet.predictor import VideoPredictor

    predictor = VideoPredictor(tiny_cfg(), input_format="RGB")
    rng = np.random.default_rng(0)
    a = [
        predictor(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8))["frame_type"]
        for _ in range(2)
    ]
    assert a == ["first", "pruned"]
    with caplog.at_level(logging.INFO, logger="detectron2.rgtp_vitdet.predictor"):
        out = predictor(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    assert out["frame_type"] == "first" and predictor.frame_index == 1
    assert "frame size changed" in caplog.text


def test_case7_readme_snippet_runs_as_written_with_the_demo_model(capsys, monkeypatch):
    text = (REPO / "README.md").read_text()
    snippet = re.search(
        r"Streaming from Python:\s*(?:<!--.*?-->\s*)?```python\n(.*?)```", text, re.S
    ).group(1)
    assert "configs/demo/vid_keep64.yaml" in snippet
    monkeypatch.chdir(REPO)
    exec(compile(snippet, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and lines[0].startswith("first")
    assert "0.5" in snippet and "scores" in snippet  # the count printed uses the drawing threshold


# ------------------------------------------------------------------------------------------------ case 8
def test_case8_bad_override_in_train_net_is_one_line_error(tmp_path):
    proc = run_train_net(
        [
            "--config-file",
            "configs/vid/keep512.yaml",
            "--eval-only",
            *TINY,
            "MODEL.RGTP.KEEP_TOKNS",
            "3",
        ],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert "MODEL.RGTP.KEEP_TOKNS" in proc.stderr


def test_case8_recogniser_checkpoint_given_to_the_detector_says_so(tmp_path):
    from detectron2.modeling import build_model
    from rgtp_vitdet.checkpoint import CheckpointError, RGTPCheckpointer

    rec = tmp_path / "vivit.pyth"
    torch.save(
        {"model_state": {"spatial.blocks.0.attn.qkv.weight": torch.zeros(1)}, "epoch": 3}, rec
    )
    model = build_model(tiny_cfg())
    with pytest.raises(CheckpointError, match="ViViT") as e:
        RGTPCheckpointer(model, str(tmp_path)).load(str(rec))
    assert len(str(e.value)) < 600


def test_case8_relative_weights_resolve_against_the_repository(tmp_path, monkeypatch):
    from rgtp_vitdet.engine import resolve_weights

    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg("configs/demo/vid_keep64.yaml")
    cfg.MODEL.WEIGHTS = "models/demo/vitdet_demo.pth"
    assert Path(resolve_weights(cfg)) == REPO / "models/demo/vitdet_demo.pth"
    cfg.MODEL.WEIGHTS = "models/demo/nothing.pth"
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS.*nothing.pth") as e:
        resolve_weights(cfg, "configs/demo/vid_keep64.yaml")
    assert "vid_keep64.yaml" in str(e.value) and str(REPO) in str(e.value)
