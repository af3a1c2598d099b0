"""Helpers of the detection tests: tiny ImageNet VID datasets written in both real layouts (JPEG frames +
ILSVRC2015 XML; COCO-style JSON), a tiny random-weight model config, and a random checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"

# A tiny ViTDet: 128x128 canvas (8x8 tokens), 4 blocks (windowed 0, 2; global 1, 3), width 64.
TINY = [
    "MODEL.VIT.IMG_SIZE",
    "128",
    "MODEL.VIT.INPUT_SIZE",
    "128",
    "MODEL.VIT.EMBED_DIM",
    "64",
    "MODEL.VIT.DEPTH",
    "4",
    "MODEL.VIT.NUM_HEADS",
    "4",
    "MODEL.VIT.WINDOW_SIZE",
    "4",
    "MODEL.VIT.WINDOW_BLOCK_INDEXES",
    "[0,2]",
    "MODEL.VIT.PRETRAIN_IMG_SIZE",
    "64",
    "MODEL.VIT.PYRAMID_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.02",
    "INPUT.MIN_SIZE_TEST",
    "80",
    "INPUT.MAX_SIZE_TEST",
    "128",
    "INPUT.MIN_SIZE_TRAIN",
    "(80,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.DEVICE",
    "cpu",
]

FRAME_W, FRAME_H = 160, 96
WNIDS = ["n02691156", "n02419796", "n02131653", "n02834778", "n01503061", "n02924116"]


def _frame(rng: np.random.Generator, t: int, box: List[float]) -> np.ndarray:
    img = rng.integers(0, 60, size=(FRAME_H, FRAME_W, 3), dtype=np.uint8)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    img[y0:y1, x0:x1] = np.array([200, 40 + 10 * t, 90], dtype=np.uint8)
    return img


def _videos(spec: Dict[str, List[int]], seed: int) -> List[dict]:
    """Frames (video, frame number, image, boxes) of moving rectangles; spec maps a video to its frame numbers."""
    rng = np.random.default_rng(seed)
    out = []
    for vi, (video, frames) in enumerate(spec.items()):
        wnid = WNIDS[vi % len(WNIDS)]
        x, y = float(rng.integers(2, 30)), float(rng.integers(2, 15))
        w, h = float(rng.integers(70, 110)), float(rng.integers(50, 70))
        for f in frames:
            box = [x + 2 * f, y + f, min(x + 2 * f + w, FRAME_W - 1), min(y + f + h, FRAME_H - 1)]
            out.append(
                {"video": video, "frame": f, "image": _frame(rng, f, box), "boxes": [(wnid, box)]}
            )
    return out


DEFAULT_SPEC = {
    "ILSVRC2015_val_00000000": list(range(10)),
    "ILSVRC2015_val_00001000": list(range(6)),
    "ILSVRC2015_val_00002000": list(range(4)) + list(range(6, 9)),  # a gap: two segments
    "ILSVRC2015_val_00003000": list(range(5)),
}


def write_ilsvrc(root: Path, spec: Dict[str, List[int]] = DEFAULT_SPEC, seed: int = 0) -> Path:
    """Write the ILSVRC2015 layout (JPEG + XML + ImageSets/VID/val.txt) under ``root/ILSVRC2015``."""
    base = root / "ILSVRC2015"
    lines = []
    for i, fr in enumerate(_videos(spec, seed)):
        rel = f"{fr['video']}/{fr['frame']:06d}"
        jpg = base / "Data" / "VID" / "val" / f"{rel}.JPEG"
        xml = base / "Annotations" / "VID" / "val" / f"{rel}.xml"
        jpg.parent.mkdir(parents=True, exist_ok=True)
        xml.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fr["image"]).save(jpg, quality=95)
        objs = "".join(
            f"<object><trackid>{k}</trackid><name>{wnid}</name><bndbox><xmax>{b[2]:.0f}</xmax><xmin>{b[0]:.0f}"
            f"</xmin><ymax>{b[3]:.0f}</ymax><ymin>{b[1]:.0f}</ymin></bndbox><occluded>0</occluded>"
            f"<generated>0</generated></object>"
            for k, (wnid, b) in enumerate(fr["boxes"])
        )
        xml.write_text(
            f"<annotation><folder>VID/val/{fr['video']}</folder><filename>{fr['frame']:06d}</filename>"
            f"<source><database>ILSVRC_2015</database></source><size><width>{FRAME_W}</width>"
            f"<height>{FRAME_H}</height></size>{objs}</annotation>"
        )
        lines.append(f"{rel} {i + 1}")
    sets = base / "ImageSets" / "VID"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("\n".join(lines) + "\n")
    return base


def write_json(root: Path, spec: Dict[str, List[int]] = DEFAULT_SPEC, seed: int = 0) -> Path:
    """Write the COCO-style JSON layout (mmtracking CocoVID fields) under ``root/vid``, the same frames and boxes
    as :func:`write_ilsvrc` with the same seed."""
    base = root / "vid"
    images, annos, videos = [], [], {}
    for fr in _videos(spec, seed):
        vid = videos.setdefault(fr["video"], len(videos) + 1)
        rel = f"Data/VID/val/{fr['video']}/{fr['frame']:06d}.JPEG"
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fr["image"]).save(path, quality=95)
        iid = len(images) + 1
        images.append(
            {
                "id": iid,
                "file_name": rel,
                "height": FRAME_H,
                "width": FRAME_W,
                "video_id": vid,
                "frame_id": fr["frame"],
            }
        )
        for wnid, b in fr["boxes"]:
            x0, y0, x1, y1 = (round(v) for v in b)
            annos.append(
                {
                    "id": len(annos) + 1,
                    "image_id": iid,
                    "video_id": vid,
                    "category_id": WNIDS.index(wnid) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    from rgtp_vitdet.vid import VID_CATEGORIES

    cats = [{"id": i + 1, "name": n, "encode_name": w} for i, (w, n) in enumerate(VID_CATEGORIES)]
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    data = {
        "videos": [{"id": v, "name": k} for k, v in videos.items()],
        "images": images,
        "annotations": annos,
        "categories": cats,
    }
    (base / "annotations" / "vid_val.json").write_text(json.dumps(data))
    return base


def tiny_cfg(config: str = "configs/vid/keep512.yaml", opts: List[str] = ()):
    """A frozen-free config: the given file with the tiny-model overrides."""
    from detectron2.config import get_cfg
    from rgtp_vitdet import add_rgtp_config

    cfg = get_cfg()
    add_rgtp_config(cfg)
    cfg.merge_from_file(str(REPO / config))
    cfg.merge_from_list(list(TINY) + ["MODEL.WEIGHTS", ""] + list(opts))
    return cfg


def random_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save random weights of the tiny model, with a peaky classifier so that scores spread over (0, 1)."""
    from detectron2.modeling import build_model

    torch.manual_seed(seed)
    model = build_model(tiny_cfg())
    sd = model.state_dict()
    g = torch.Generator().manual_seed(seed)
    sd["roi_heads.box_predictor.cls_score.weight"] = (
        torch.randn(sd["roi_heads.box_predictor.cls_score.weight"].shape, generator=g) * 0.5
    )
    # a positive bias on the 'background' logit keeps a realistic number of boxes above the threshold
    torch.save({"model": sd}, path)
    return path


def run_train_net(
    args: List[str], env_root: Path, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run tools/train_net.py in a subprocess with RGTP_DATASETS=env_root; fails the test with its output."""
    env = dict(os.environ, RGTP_DATASETS=str(env_root), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(TRAIN_NET), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc
