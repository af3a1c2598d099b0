"""The temporal fine-tune on the cache with two CPU processes (gloo, DistributedDataParallel) gives the weights and
the history of one process, also when the videos do not split evenly over the processes."""

from __future__ import annotations

import json

import pytest
import torch
from rgtp_vivit.cache import run_cache
from rgtp_vivit.checkpoint import checkpoint_path
from rgtp_vivit.distributed import launch_job
from rgtp_vivit.train_net import train
from vivit_helpers import TINY_KINETICS, cfg_from, make_kinetics


def test_two_processes_train_like_one(tmp_path):
    # 5 videos, batches of 4: per epoch a full step (2 + 2 videos), then a last step of one video on rank 0 alone
    # (rank 1 has joined): the uneven case
    root = make_kinetics(tmp_path / "data", num_videos=5, short_index=None)

    def cfg(out, *opts):
        return cfg_from(
            ["configs/kinetics/keep_049.yaml"],
            TINY_KINETICS
            + ["DATA.PATH_TO_DATA_DIR", str(root), "OUTPUT_DIR", str(out), "CACHE.DIR",
               str(tmp_path / "cache"), "CACHE.SPLITS", "['val']", "TRAIN.SPLIT", "val",
               "TRAIN.VAL_SPLIT", "val", "TRAIN.BATCH_SIZE", "4", "SOLVER.MAX_EPOCH", "2",
               "SOLVER.BASE_LR", "1e-2", "MODEL.DROPOUT_RATE", "0.0", "DATA_LOADER.NUM_WORKERS", "0",
               *opts],
        )  # fmt: skip

    run_cache(cfg(tmp_path / "one"))
    one = train(cfg(tmp_path / "one"))
    launch_job(cfg(tmp_path / "two", "NUM_GPUS", "2"), "", train)
    with open(tmp_path / "two" / "train_log.json") as f:
        two = json.load(f)
    assert [h["epoch"] for h in two] == [1, 2]
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    w1 = torch.load(checkpoint_path(str(tmp_path / "one"), 2), weights_only=False)["model_state"]
    w2 = torch.load(checkpoint_path(str(tmp_path / "two"), 2), weights_only=False)["model_state"]
    first = torch.load(checkpoint_path(str(tmp_path / "one"), 1), weights_only=False)
    assert not torch.equal(first["model_state"]["classifier.weight"], w1["classifier.weight"])
    for k in w1:
        a, b = w1[k], w2[k]
        if k.endswith("attn.qkv.bias"):
            # the key bias has a zero gradient (softmax ignores it) up to rounding noise, which AdamW scales up to
            # steps of the learning rate: compare the query and value biases only
            a, b = a.view(3, -1)[[0, 2]], b.view(3, -1)[[0, 2]]
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
