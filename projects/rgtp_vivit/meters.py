"""Multi-view ensembling and accuracy metrics of the test loop."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor


def ensemble_views(view_logits: Tensor, method: str = "mean_logits") -> Tensor:
    """Video scores from ``(V, views, C)`` view logits: the mean of logits (the paper) or PySlowFast's sum of
    softmax."""
    if method == "mean_logits":
        return view_logits.mean(dim=1)
    if method == "sum_softmax":
        return view_logits.softmax(dim=-1).sum(dim=1)
    raise ValueError(
        f"unknown TEST.ENSEMBLE_METHOD {method!r}: allowed ('mean_logits', 'sum_softmax')"
    )


def topk_correct(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """Boolean ``(V,)``: the label is among the top-``k`` scores (k clipped to the number of classes)."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def classification_metrics(
    scores: Tensor,
    labels: Tensor,
    noun_scores: Optional[Tensor] = None,
    nouns: Optional[Tensor] = None,
) -> Dict[str, float]:
    """Top-1/top-5 and mean per-class accuracy in percent; with noun scores also noun and action top-1 (action =
    verb and noun both right, the EPIC-Kitchens convention)."""
    if scores.shape[0] == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_class_accuracy": float("nan")}
    top1 = topk_correct(scores, labels, 1)
    out = {
        "top1": 100.0 * top1.float().mean().item(),
        "top5": 100.0 * topk_correct(scores, labels, 5).float().mean().item(),
    }
    per_class = [top1[labels == c].float().mean().item() for c in torch.unique(labels).tolist()]
    out["mean_class_accuracy"] = 100.0 * sum(per_class) / len(per_class)
    if noun_scores is not None and nouns is not None:
        noun1 = topk_correct(noun_scores, nouns, 1)
        out["noun_top1"] = 100.0 * noun1.float().mean().item()
        out["action_top1"] = 100.0 * (noun1 & top1).float().mean().item()
    return out
