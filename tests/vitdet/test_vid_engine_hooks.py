"""The detector evaluates through detectron2's ``inference_on_dataset`` with callbacks that reset the streams, and
``RGTPTrainer.test`` honours the evaluators it is given (like ``DefaultTrainer.test``)."""

from __future__ import annotations

import json

import pytest
from detectron2.evaluation import DatasetEvaluator
from rgtp_vitdet.engine import RGTPTrainer, stream_callbacks
from vitdet_helpers import tiny_cfg

from rgtp.state import StreamState


class Recording(DatasetEvaluator):
    """Records, per frame, its video and the videos the model holds a stream for; returns fixed results."""

    def __init__(self, model) -> None:
        self.model = model
        self.frames: list = []

    def reset(self) -> None:
        self.frames = []

    def process(self, inputs, outputs) -> None:
        self.frames += [(str(x["video_id"]), set(self.model._states)) for x in inputs]

    def evaluate(self) -> dict:
        return {"bbox": {"AP50": 12.5, "frames": len(self.frames)}}


def test_test_uses_the_given_evaluators_and_resets_the_streams(vid_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RGTP_DATASETS", str(vid_root))
    cfg = tiny_cfg(opts=["DATASETS.TEST", "('vid_val',)", "OUTPUT_DIR", str(tmp_path)])
    model = RGTPTrainer.build_model(cfg)
    model._states["stale"] = (
        StreamState()
    )  # left over from an earlier pass: dropped when the pass starts
    ev = Recording(model)
    res = RGTPTrainer.test(cfg, model, ev)  # one evaluator for the one split
    assert res == {"bbox": {"AP50": 12.5, "frames": 28}}
    assert len({v for v, _ in ev.frames}) == 5  # 4 videos, one of them in two segments
    assert all(v in held and "stale" not in held for v, held in ev.frames)
    assert model.num_streams == 0  # and reset again at the end
    written = json.loads((tmp_path / "inference" / "results_vid_val.json").read_text())
    assert written == res
    with pytest.raises(ValueError, match="one per split"):
        RGTPTrainer.test(cfg, model, [ev, ev])


def test_stream_callbacks_reset_through_a_wrapper():
    class Model:
        resets = 0

        def reset_streams(self) -> None:
            self.resets += 1

    class Wrapper:  # as DistributedDataParallel: the model is .module
        module = Model()

    cb = stream_callbacks(Wrapper(), total=2)
    cb["on_start"]()
    cb["after_inference"]()
    cb["on_end"]()
    assert Wrapper.module.resets == 2


def test_checkpointer_saves_atomically(tmp_path, monkeypatch):
    import os

    import torch
    from rgtp_vitdet.checkpoint import RGTPCheckpointer

    ck = RGTPCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    ck.save("model_0000001", iteration=1)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert ck.get_checkpoint_file().endswith("model_0000001.pth")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        ck.save("model_0000002")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
