"""Temporal fine-tuning on the spatial cache (docs/method.md §8.2).

Only the temporal transformer and the classifier(s) are optimised (AdamW, weight decay 0.05, constant lr, dropout 0.5
before the classifier, seed 42). A sample is one video's cached ``(views, T, C)`` features; the view logits are
averaged (as at test time) and the loss is cross-entropy on those **logits**. (The official code applies
``CrossEntropyLoss`` to softmax outputs, a double softmax inherited from Eventful; we do not repeat it.) With a noun
head and noun labels, the noun cross-entropy is added. Validation runs every TRAIN.EVAL_PERIOD epochs; checkpoints
``OUTPUT_DIR/checkpoints/checkpoint_epoch_XXXXX.pyth`` hold ``model_state`` (the whole model, PySlowFast format),
``optimizer_state``, ``epoch`` and ``cfg``, and a run resumes from the last one.

With several processes (``NUM_GPUS``; gloo on the CPU) each takes every world-th video of a step's batch and
``DistributedDataParallel`` averages the gradients; the loss is scaled by the step's global batch size, so the
weights and the history equal those of one process (up to rounding), also for an uneven last batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed as du
from .build import build_model
from .cache import CacheDataset
from .checkpoint import load_model_state, resume_training, save_epoch
from .logging_utils import setup_logging
from .meters import classification_metrics

logger = logging.getLogger(__name__)


def trainable_parameters(model: torch.nn.Module) -> List[torch.nn.Parameter]:
    """Freeze everything but the temporal model and the classifier(s); return the trainable parameters."""
    params = []
    for name, p in model.named_parameters():
        train = name.startswith(("temporal.", "classifier.", "noun_classifier."))
        p.requires_grad_(train)
        if train:
            params.append(p)
    return params


def _video_logits(model: torch.nn.Module, feats: torch.Tensor) -> Dict[str, torch.Tensor]:
    b, v = feats.shape[:2]
    out = model.head(feats.flatten(0, 1))
    return {k: t.view(b, v, -1).mean(dim=1) for k, t in out.items()}


class CachedHead(torch.nn.Module):
    """The part of the recogniser trained on the cache, as a module whose ``forward`` is the training step's
    forward (view-averaged logits of ``(B, views, T, C)`` cached features), so that ``DistributedDataParallel``
    can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> Dict[str, torch.Tensor]:
        return _video_logits(self.model, feats)


def _loss_sum(
    out: Dict[str, torch.Tensor], label: torch.Tensor, noun: torch.Tensor
) -> torch.Tensor:
    """The summed (not averaged) cross-entropy of a batch, plus the noun cross-entropy with noun labels."""
    loss = F.cross_entropy(out["logits"], label, reduction="sum")
    if "noun_logits" in out and bool((noun >= 0).all()):
        loss = loss + F.cross_entropy(out["noun_logits"], noun, reduction="sum")
    return loss


@torch.no_grad()
def validate(
    model: torch.nn.Module, dataset: CacheDataset, cfg: CfgNode, device: torch.device
) -> Dict[str, float]:
    """Accuracy on a cached split (sharded over processes, gathered)."""
    model.eval()
    idx = list(range(du.get_rank(), len(dataset), du.get_world_size()))
    rows = []
    for i in idx:
        feats, label, noun = dataset[i]
        out = _video_logits(model, feats[None].to(device))
        rows.append((i, out["logits"][0].cpu(), label, out.get("noun_logits", [None])[0], noun))
    rows = sorted((r for part in du.all_gather_object(rows) for r in part), key=lambda r: r[0])
    scores = torch.stack([r[1] for r in rows])
    labels = torch.tensor([r[2] for r in rows])
    ns = nouns = None
    if rows[0][3] is not None and all(r[4] >= 0 for r in rows):
        ns = torch.stack([r[3].cpu() for r in rows])
        nouns = torch.tensor([r[4] for r in rows])
    return classification_metrics(scores, labels, ns, nouns)


def train(cfg: CfgNode) -> List[Dict[str, Any]]:
    """Fine-tune under ``cfg``; returns (and writes ``OUTPUT_DIR/train_log.json``) the per-epoch history of
    ``train_loss`` and validation metrics. ``TRAIN.MODE full`` trains the whole model (train_full).
    """
    if cfg.TRAIN.MODE == "full":
        from .train_full import train_full

        return train_full(cfg)
    setup_logging(cfg.OUTPUT_DIR)
    device = du.device_for(cfg)
    torch.manual_seed(cfg.RNG_SEED)
    model = build_model(cfg)
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        load_model_state(model, cfg.TRAIN.CHECKPOINT_FILE_PATH)
        logger.info("starting from %s", cfg.TRAIN.CHECKPOINT_FILE_PATH)
    model.to(device)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )
    log_path = os.path.join(cfg.OUTPUT_DIR, "train_log.json")
    start_epoch, history = resume_training(cfg, model, optimizer, log_path)

    train_set = CacheDataset(cfg, cfg.TRAIN.SPLIT)
    val_set = CacheDataset(cfg, cfg.TRAIN.VAL_SPLIT)
    world, rank = du.get_world_size(), du.get_rank()
    batch = max(1, cfg.TRAIN.BATCH_SIZE // world)
    step_model: torch.nn.Module = CachedHead(model)
    if world > 1:
        # Gradients are averaged over the processes by DDP; the loss below is scaled so that this average is the
        # mean over the step's whole batch, as in one process, also when the processes hold unequal parts of it.
        step_model = DistributedDataParallel(
            step_model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=hasattr(model, "noun_classifier"),  # unused without noun labels
        )
    for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
        g = torch.Generator().manual_seed(cfg.RNG_SEED + epoch)
        order = torch.randperm(len(train_set), generator=g).tolist()
        mine = order[rank::world]
        model.train()
        total, count = 0.0, 0
        steps = range(0, len(mine), batch)
        # join(): a process out of batches (an uneven split) shadows the others' gradient reductions
        with step_model.join() if world > 1 else contextlib.nullcontext():
            for s in tqdm(steps, desc=f"epoch {epoch + 1}", disable=not du.is_master()):
                items = [train_set[i] for i in mine[s : s + batch]]
                feats = torch.stack([it[0] for it in items]).to(device)
                label = torch.tensor([it[1] for it in items], device=device)
                noun = torch.tensor([it[2] for it in items], device=device)
                # the videos of this step over all processes: order[s * world : (s + batch) * world]
                in_step = len(order[s * world : (s + batch) * world])
                loss = _loss_sum(step_model(feats), label, noun)
                optimizer.zero_grad(set_to_none=True)
                (loss * (world / in_step)).backward()
                optimizer.step()
                total += loss.item()
                count += len(items)
        sums = du.all_gather_object((total, count))
        entry: Dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": sum(t for t, _ in sums) / max(1, sum(c for _, c in sums)),
        }
        if (epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCH:
            entry.update({f"val_{k}": v for k, v in validate(model, val_set, cfg, device).items()})
        history.append(entry)
        logger.info(
            "epoch %d: %s",
            epoch + 1,
            ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "epoch"),
        )
        if du.is_master():
            save_epoch(cfg, model, optimizer, epoch + 1, history, log_path)
        du.barrier()
    return history
