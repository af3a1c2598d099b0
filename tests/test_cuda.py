"""What only a CUDA device can check (``tools/gpu_check.sh`` runs this file; skipped without CUDA): the benchmark's
CUDA graph capture, pruned frames on the GPU against the CPU, and the incremental detection head on the GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = ["--size", "64", "--keep", "8", "--warmup", "1", "--repeats", "2", "--device", "cuda"]


def test_benchmark_cudagraph_capture_matches_eager(tmp_path: Path) -> None:
    from rgtp_apps.benchmark.cli import main

    rows = main(TINY + ["--batch", "1", "2", "--capture", "cudagraph", "--out", str(tmp_path)])
    assert len(rows) == 2
    for row in rows:
        assert row["capture"] == "cudagraph" and row["capture_check"] is True
        assert row["capture_kept_equal"] is True and row["pruned_median_s"] > 0
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"][0]["device"] == "cuda"


def test_pruned_frames_on_cuda_equal_the_cpu() -> None:
    from rgtp.config import RGTPConfig
    from rgtp.state import StreamState
    from rgtp.vit import PrunedViT

    torch.manual_seed(0)
    cfg = RGTPConfig(keep_tokens=12, rollout_pool=2)
    arch = dict(
        img_size=128,
        embed_dim=64,
        depth=4,
        num_heads=4,
        window_size=4,
        window_block_indexes=(0, 2),
        pretrain_img_size=64,
    )
    cpu = PrunedViT(**arch, rgtp=cfg).eval()
    gpu = PrunedViT(**arch, rgtp=cfg).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, 3, 160, 160, generator=g)
    sc, sg = [StreamState() for _ in range(2)], [StreamState() for _ in range(2)]
    anchors = torch.zeros(2, 8, 8, dtype=torch.bool)
    with torch.inference_mode():
        for t in range(10):
            x = base[:, :, t : t + 128, t : t + 128].contiguous()
            a = cpu(x, sc)["last_feat"]
            b = gpu(x.cuda(), sg)["last_feat"].cpu()
            cpu.update_heatmap(sc, anchors)
            gpu.update_heatmap(sg, anchors.cuda())
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
            for s, r in zip(sg, sc):
                if r.kept is not None:
                    assert torch.equal(s.kept.cpu(), r.kept)


def test_incremental_head_on_cuda_equals_the_dense_head() -> None:
    on, off = tiny_detectors("cuda")
    g = torch.Generator().manual_seed(3)
    bg = torch.rand(3, 100, 170, generator=g) * 200
    with torch.inference_mode():
        for t in range(12):
            img = bg[:, t : t + 72, 3 * t : 3 * t + 128].contiguous()
            inp = [{"image": img, "height": 72, "width": 128, "video_id": "v", "frame_index": t}]
            a, b = on(inp)[0], off(inp)[0]
            ia, ib = a["instances"], b["instances"]
            assert len(ia) == len(ib) > 0
            # near-tied scores of random weights may swap places: compare the sorted scores
            torch.testing.assert_close(
                ia.scores.sort().values, ib.scores.sort().values, rtol=0, atol=1e-4
            )
            if a["rgtp"]["frame_type"] == "pruned":
                assert a["rgtp"]["gflops_head_executed"] < a["rgtp"]["gflops_head_dense"]


def tiny_detectors(device: str):
    """The tiny detector on ``device``, incremental head on and off, same random weights."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from rgtp_vitdet import add_rgtp_config

    tiny = [
        "MODEL.VIT.IMG_SIZE",
        128,
        "MODEL.VIT.INPUT_SIZE",
        128,
        "MODEL.VIT.EMBED_DIM",
        64,
        "MODEL.VIT.DEPTH",
        4,
        "MODEL.VIT.NUM_HEADS",
        4,
        "MODEL.VIT.WINDOW_SIZE",
        4,
        "MODEL.VIT.WINDOW_BLOCK_INDEXES",
        [0, 2],
        "MODEL.VIT.PRETRAIN_IMG_SIZE",
        64,
        "MODEL.VIT.PYRAMID_CHANNELS",
        32,
        "MODEL.ROI_BOX_HEAD.CONV_DIM",
        32,
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        64,
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        50,
        "INPUT.MIN_SIZE_TEST",
        80,
        "INPUT.MAX_SIZE_TEST",
        128,
        "INPUT.MIN_SIZE_TRAIN",
        (80,),
        "INPUT.MAX_SIZE_TRAIN",
        128,
        "MODEL.WEIGHTS",
        "",
        "MODEL.DEVICE",
        device,
        "MODEL.RGTP.KEEP_RATIO",
        0.25,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        0.0,
    ]
    models = []
    for inc in (True, False):
        cfg = get_cfg()
        add_rgtp_config(cfg)
        cfg.merge_from_file(str(Path(__file__).resolve().parents[1] / "configs/vid/keep512.yaml"))
        cfg.merge_from_list([str(v) if not isinstance(v, str) else v for v in tiny])
        cfg.MODEL.RGTP.INCREMENTAL_HEAD = inc
        torch.manual_seed(0)
        models.append(build_model(cfg).eval())
    models[1].load_state_dict(models[0].state_dict())
    return models
