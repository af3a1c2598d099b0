"""End-to-end training of the whole ViViT on decoded clips (``TRAIN.MODE full``), added for the embedded demo.

The paper never trains the recogniser (it starts from the TAdaConv checkpoints and only fine-tunes the temporal
model on cached spatial features, :mod:`rgtp_vivit.train_net`). The embedded demo has no such checkpoint, so it
trains a small dense ViViT from scratch here: every parameter is optimised (AdamW, ``SOLVER.BASE_LR``,
``SOLVER.WEIGHT_DECAY``; ``SOLVER.LR_POLICY cosine`` gives a linear warm-up over ``SOLVER.WARMUP_EPOCHS`` then a
cosine decay), one training view per video and step: a random temporal start and a random scale-and-crop (short
side in ``[TEST_CROP_SIZE, TRAIN.JITTER_SHORT_SIDE_MAX]``), and, when enabled, a horizontal flip (``TRAIN.HFLIP``)
and a time reversal (``TRAIN.REVERSE``), each with the class pairs it swaps (``TRAIN.HFLIP_SWAP``,
``TRAIN.REVERSE_SWAP``: a flip turns "moving left" into "moving right", a reversal "approaching" into "receding"). Pruning is off while training (the dense model is trained). Validation uses the test
views of ``TRAIN.VAL_SPLIT``. Checkpoints and ``train_log.json`` have the format of :mod:`rgtp_vivit.train_net`.
Single process (it is meant for small models on a CPU).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from tqdm import tqdm

from .build import build_dataset, build_model
from .checkpoint import load_model_state, resume_training, save_epoch
from .logging_utils import setup_logging
from .meters import classification_metrics
from .video import VideoError, decode_video, make_views

__all__ = ["train_full"]

logger = logging.getLogger(__name__)


def swap_map(pairs: List[str], classes: List[str], key: str) -> Dict[int, int]:
    """Label map of ``"a|b"`` class-name pairs (both directions); an unknown name raises naming ``key``."""
    index = {c: i for i, c in enumerate(classes)}
    out: Dict[int, int] = {}
    for pair in pairs:
        names = [n.strip() for n in str(pair).split("|")]
        if len(names) != 2 or any(n not in index for n in names):
            raise ValueError(
                f"invalid config {key} entry {pair!r}: expected 'class|class' with classes from {classes}"
            )
        a, b = index[names[0]], index[names[1]]
        out[a], out[b] = b, a
    return out


def _decode_split(cfg: CfgNode, split: str) -> List[Tuple[np.ndarray, int]]:
    """Decode every video of ``split`` once (uint8 ``(L, H, W, 3)``, label); unreadable ones are skipped."""
    ds = build_dataset(cfg.TRAIN.DATASET, cfg, split)
    d = cfg.DATA
    out = []
    for rec in tqdm(ds.records, desc=f"decode {split}", unit="video"):
        try:
            video, _ = decode_video(rec.path, rec.start, rec.stop, d.TARGET_FPS, d.END_TOLERANCE)
        except VideoError as e:
            if d.STRICT:
                raise
            logger.warning("skipping %s: %s", rec.path, e)
            continue
        out.append((video, int(rec.label)))
    if not out:
        raise RuntimeError(f"no readable video in split {split!r} of {cfg.DATA.PATH_TO_DATA_DIR}")
    return out


def _train_view(
    video: np.ndarray,
    label: int,
    cfg: CfgNode,
    rng: np.random.Generator,
    maps: Tuple[Dict[int, int], Dict[int, int]],
) -> Tuple[torch.Tensor, int]:
    """One augmented view ``(3, T, crop, crop)`` and its label: random temporal start, random short side and crop,
    optional flip and time reversal (with their label swaps)."""
    d = cfg.DATA
    span = d.NUM_FRAMES * d.SAMPLING_RATE
    length = video.shape[0]
    start = int(rng.integers(0, max(1, length - span + 1)))
    idx = [min(start + j * d.SAMPLING_RATE, length - 1) for j in range(d.NUM_FRAMES)]
    if cfg.TRAIN.REVERSE and rng.random() < 0.5:
        idx = idx[::-1]
        label = maps[1].get(label, label)
    flip = cfg.TRAIN.HFLIP and rng.random() < 0.5
    if flip:
        label = maps[0].get(label, label)
    frames = torch.from_numpy(np.ascontiguousarray(video[idx])).permute(0, 3, 1, 2).float() / 255.0
    crop = d.TEST_CROP_SIZE
    short = int(rng.integers(crop, max(crop, cfg.TRAIN.JITTER_SHORT_SIDE_MAX) + 1))
    h, w = frames.shape[-2:]
    scale = short / min(h, w)
    nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
    frames = F.interpolate(
        frames, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    )
    y = int(rng.integers(0, nh - crop + 1))
    x = int(rng.integers(0, nw - crop + 1))
    frames = frames[:, :, y : y + crop, x : x + crop]
    if flip:
        frames = frames.flip(-1)
    m = torch.tensor(d.MEAN).view(1, 3, 1, 1)
    s = torch.tensor(d.STD).view(1, 3, 1, 1)
    return ((frames - m) / s).permute(1, 0, 2, 3).contiguous(), label


def _lr_at(cfg: CfgNode, progress: float) -> float:
    """Learning rate at ``progress`` epochs (fractional) under ``SOLVER.LR_POLICY``."""
    base = cfg.SOLVER.BASE_LR
    if cfg.SOLVER.LR_POLICY != "cosine":
        return base
    warm = float(cfg.SOLVER.WARMUP_EPOCHS)
    if progress < warm:
        return base * (0.01 + 0.99 * progress / warm)
    t = (progress - warm) / max(1e-9, cfg.SOLVER.MAX_EPOCH - warm)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def _validate(
    model: torch.nn.Module, val: List[Tuple[np.ndarray, int]], cfg: CfgNode
) -> Dict[str, float]:
    """Top-1/top-5 with the test views (mean of the view logits)."""
    model.eval()
    d, t = cfg.DATA, cfg.TEST
    scores, labels = [], []
    for video, label in val:
        views = make_views(
            video,
            d.NUM_FRAMES,
            d.SAMPLING_RATE,
            t.NUM_ENSEMBLE_VIEWS,
            t.NUM_SPATIAL_CROPS,
            d.TEST_CROP_SIZE,
            d.TEST_SHORT_SIDE,
            d.MEAN,
            d.STD,
        )
        scores.append(model(views)["logits"].mean(dim=0))
        labels.append(label)
    return classification_metrics(torch.stack(scores), torch.tensor(labels))


def train_full(cfg: CfgNode) -> List[Dict[str, Any]]:
    """Train every parameter of the (dense) model under ``cfg``; returns and writes the per-epoch history."""
    setup_logging(cfg.OUTPUT_DIR)
    if cfg.RGTP.ENABLE:
        logger.info("TRAIN.MODE full trains the dense model: pruning is off while training")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.RGTP.ENABLE = False
    torch.manual_seed(cfg.RNG_SEED)
    model = build_model(cfg)
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        load_model_state(model, cfg.TRAIN.CHECKPOINT_FILE_PATH)
        logger.info("starting from %s", cfg.TRAIN.CHECKPOINT_FILE_PATH)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        p.requires_grad_(True)
        (no_decay if p.ndim <= 1 or "pos_embed" in name or "cls_token" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.SOLVER.BASE_LR,
    )
    log_path = os.path.join(cfg.OUTPUT_DIR, "train_log.json")
    start_epoch, history = resume_training(cfg, model, optimizer, log_path)

    classes = list(getattr(build_dataset(cfg.TRAIN.DATASET, cfg, cfg.TRAIN.SPLIT), "classes", []))
    maps = (
        swap_map(list(cfg.TRAIN.HFLIP_SWAP), classes, "TRAIN.HFLIP_SWAP"),
        swap_map(list(cfg.TRAIN.REVERSE_SWAP), classes, "TRAIN.REVERSE_SWAP"),
    )
    train_set = _decode_split(cfg, cfg.TRAIN.SPLIT)
    val_set = _decode_split(cfg, cfg.TRAIN.VAL_SPLIT)
    batch = cfg.TRAIN.BATCH_SIZE
    steps_per_epoch = math.ceil(len(train_set) / batch)
    for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
        rng = np.random.default_rng([cfg.RNG_SEED, epoch])
        order = rng.permutation(len(train_set))
        model.train()
        total, correct, count = 0.0, 0, 0
        for step in tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False):
            ids = order[step * batch : (step + 1) * batch]
            views = [_train_view(train_set[i][0], train_set[i][1], cfg, rng, maps) for i in ids]
            clips = torch.stack([v[0] for v in views])
            label = torch.tensor([v[1] for v in views])
            for g in optimizer.param_groups:
                g["lr"] = _lr_at(cfg, epoch + step / steps_per_epoch)
            logits = model(clips)["logits"]
            loss = F.cross_entropy(logits, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item() * len(ids)
            correct += int((logits.argmax(dim=1) == label).sum())
            count += len(ids)
        entry: Dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": total / max(1, count),
            "train_top1": correct / max(1, count),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if (epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCH:
            entry.update({f"val_{k}": v for k, v in _validate(model, val_set, cfg).items()})
        history.append(entry)
        logger.info(
            "epoch %d: %s",
            epoch + 1,
            ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "epoch"),
        )
        save_epoch(cfg, model, optimizer, epoch + 1, history, log_path)
    return history
