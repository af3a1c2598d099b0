"""Checkpoints: conversion of the TAdaConv "ViViT Fact. Enc." weights (docs/method.md §6.2), loading with clear errors,
and PySlowFast-format saving (``{"epoch", "model_state", "optimizer_state", "cfg"}``), always written atomically.

TAdaConv → ours:

=====================================================  ==============================================
``backbone.stem.{weight,bias}``                         ``tubelet_embed.{weight,bias}``
``backbone.cls_token`` / ``backbone.pos_embd``          ``spatial.cls_token`` / ``spatial.pos_embed``
``backbone.cls_token_out`` / ``backbone.temp_embd``     ``temporal.cls_token`` / ``temporal.pos_embed``
``backbone.layers.i.norm``                              ``spatial.blocks.i.norm1``
``backbone.layers.i.attn.to_qkv`` / ``attn.proj``       ``spatial.blocks.i.attn.qkv`` / ``attn.proj``
``backbone.layers.i.norm_ffn``                          ``spatial.blocks.i.norm2``
``backbone.layers.i.ffn.net.0`` / ``ffn.net.3``         ``spatial.blocks.i.mlp.fc1`` / ``mlp.fc2``
``backbone.layers_temporal.i.*``                        ``temporal.blocks.i.*`` (same renames)
``backbone.norm`` / ``backbone.norm_out``               ``spatial.norm`` / ``temporal.norm``
``head.linear`` or ``head.linear1``                     ``classifier``
``head.linear2`` (EPIC nouns)                           ``noun_classifier`` (kept, unlike the official code)
=====================================================  ==============================================
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .fileio import atomic_torch_save, atomic_write_json

logger = logging.getLogger(__name__)

_BLOCK_RENAMES = {
    "norm": "norm1",
    "attn.to_qkv": "attn.qkv",
    "attn.proj": "attn.proj",
    "norm_ffn": "norm2",
    "ffn.net.0": "mlp.fc1",
    "ffn.net.3": "mlp.fc2",
}
_DIRECT = {
    "backbone.stem": "tubelet_embed",
    "backbone.cls_token": "spatial.cls_token",
    "backbone.pos_embd": "spatial.pos_embed",
    "backbone.cls_token_out": "temporal.cls_token",
    "backbone.temp_embd": "temporal.pos_embed",
    "backbone.norm": "spatial.norm",
    "backbone.norm_out": "temporal.norm",
    "head.linear": "classifier",
    "head.linear1": "classifier",
    "head.linear2": "noun_classifier",
}
_BLOCK_RE = re.compile(r"^backbone\.(layers|layers_temporal)\.(\d+)\.(.+)\.(weight|bias)$")


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model; the message lists the missing and unexpected keys."""


def is_tadaconv_state(state: Dict[str, Any]) -> bool:
    """Whether a state dict uses TAdaConv's ViViT names."""
    return any(k.startswith(("backbone.", "module.backbone.")) for k in state)


def convert_tadaconv_state(
    state: Dict[str, torch.Tensor], keep_noun_head: bool = True
) -> Dict[str, torch.Tensor]:
    """Rename a TAdaConv ViViT factorised-encoder state dict to this project's names.

    A ``module.`` prefix (DataParallel) is stripped. Raises :class:`CheckpointError` listing every key that has no
    mapping. The noun head is kept unless ``keep_noun_head`` is False.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    for key, value in state.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        m = _BLOCK_RE.match(k)
        if m:
            part, idx, name, leaf = m.groups()
            if name not in _BLOCK_RENAMES:
                unknown.append(key)
                continue
            prefix = "spatial" if part == "layers" else "temporal"
            out[f"{prefix}.blocks.{idx}.{_BLOCK_RENAMES[name]}.{leaf}"] = value
            continue
        base, _, leaf = k.rpartition(".")
        if base in _DIRECT and leaf in ("weight", "bias"):
            target = _DIRECT[base]
        elif k in _DIRECT:
            target, base, leaf = _DIRECT[k], k, ""
        else:
            unknown.append(key)
            continue
        if target == "noun_classifier" and not keep_noun_head:
            continue
        out[f"{target}.{leaf}" if leaf else target] = value
    if unknown:
        raise CheckpointError(f"unexpected keys with no ViViT mapping: {sorted(unknown)}")
    return out


def _fill_missing_qkv_bias(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """TAdaConv may train without a qkv bias: a zero bias is exactly equivalent."""
    filled = []
    for name, p in model.state_dict().items():
        if (
            name.endswith("attn.qkv.bias")
            and name not in state
            and name.replace(".bias", ".weight") in state
        ):
            state[name] = torch.zeros_like(p, device="cpu")
            filled.append(name)
    if filled:
        logger.info("checkpoint has no qkv bias: %d zero biases filled", len(filled))


def load_model_state(model: nn.Module, path: str, strict: bool = True) -> Dict[str, Any]:
    """Load ``path`` into ``model``: our ``model_state`` or an original TAdaConv checkpoint (converted here).

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` listing missing, unexpected and
    mis-shaped keys. Returns the whole checkpoint dict (epoch, optimizer_state, ...).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = (
        ckpt.get("model_state", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    )
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no model_state dict in the checkpoint")
    foreign = foreign_checkpoint_kind(ckpt if isinstance(ckpt, dict) else {})
    if foreign:
        raise CheckpointError(
            f"{path} is {foreign}, not a ViViT recogniser checkpoint: give it to tools/train_net.py or "
            f"tools/demo_video.py (MODEL.WEIGHTS), and give the recogniser a ViViT checkpoint "
            f"(TEST.CHECKPOINT_FILE_PATH; see docs/recognition.md)"
        )
    apply_state(model, state, path, strict)
    return ckpt if isinstance(ckpt, dict) else {}


_DETECTOR_PREFIXES = ("backbone.", "proposal_generator.", "roi_heads.", "pixel_mean", "pixel_std")


def foreign_checkpoint_kind(ckpt: Dict[str, Any]) -> str:
    """A description of ``ckpt`` when it is a checkpoint of the ViTDet detector (detectron2 ``model`` dict, or an
    MAE/Eventful ViT backbone), else ''."""
    sd = ckpt.get("model", ckpt) if isinstance(ckpt.get("model"), dict) else ckpt
    keys = [k for k in sd if isinstance(k, str)]
    if not keys:
        return ""
    n = sum(k.startswith(_DETECTOR_PREFIXES) for k in keys)
    if n >= max(1, len(keys) // 2):
        return f"a ViTDet detector checkpoint (detectron2 layout, {len(keys)} keys under backbone./roi_heads.)"
    return ""


def apply_state(
    model: nn.Module, state: Dict[str, Any], source: str = "state dict", strict: bool = True
) -> None:
    """Load a state dict (our names, or TAdaConv names converted here) into ``model``; raises
    :class:`CheckpointError` naming ``source`` and listing missing, unexpected and mis-shaped keys.
    """
    if is_tadaconv_state(state):
        logger.info("%s: TAdaConv naming, converting", source)
        state = convert_tadaconv_state(
            state, keep_noun_head=getattr(model, "noun_classifier", None) is not None
        )
    state = dict(state)
    _fill_missing_qkv_bias(model, state)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if shapes or (strict and (missing or unexpected)):
        raise CheckpointError(
            f"{source} does not fit the model: missing keys {missing}; unexpected keys {unexpected}; "
            f"shape mismatches {shapes}"
        )
    model.load_state_dict(state, strict=strict)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` atomically (:func:`rgtp.fileio.atomic_torch_save`): a crash never leaves a partial file."""
    atomic_torch_save(obj, path)


def checkpoint_dir(output_dir: str) -> str:
    """``OUTPUT_DIR/checkpoints`` (PySlowFast layout)."""
    return os.path.join(output_dir, "checkpoints")


def checkpoint_path(output_dir: str, epoch: int) -> str:
    """``OUTPUT_DIR/checkpoints/checkpoint_epoch_{epoch:05d}.pyth``."""
    return os.path.join(checkpoint_dir(output_dir), f"checkpoint_epoch_{epoch:05d}.pyth")


def last_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint with the highest epoch in ``OUTPUT_DIR/checkpoints``, or None."""
    d = checkpoint_dir(output_dir)
    if not os.path.isdir(d):
        return None
    names = sorted(n for n in os.listdir(d) if re.fullmatch(r"checkpoint_epoch_\d{5}\.pyth", n))
    return os.path.join(d, names[-1]) if names else None


def resume_training(
    cfg: Any, model: nn.Module, optimizer: torch.optim.Optimizer, log_path: str
) -> Tuple[int, List[Dict[str, Any]]]:
    """With ``TRAIN.AUTO_RESUME``, load the last checkpoint of ``cfg.OUTPUT_DIR`` into ``model`` and ``optimizer``;
    return the epoch to start from and the per-epoch log entries up to it (read from ``log_path``).
    """
    last = last_checkpoint(cfg.OUTPUT_DIR) if cfg.TRAIN.AUTO_RESUME else None
    if not last:
        return 0, []
    ckpt = load_model_state(model, last)
    optimizer.load_state_dict(ckpt["optimizer_state"])
    start_epoch = int(ckpt["epoch"])
    history: List[Dict[str, Any]] = []
    if os.path.isfile(log_path):
        with open(log_path) as f:
            history = [h for h in json.load(f) if h["epoch"] <= start_epoch]
    logger.info("resuming from %s (epoch %d)", last, start_epoch)
    return start_epoch, history


def save_epoch(
    cfg: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: List[Dict[str, Any]],
    log_path: str,
) -> None:
    """After ``epoch`` (1-based): a PySlowFast-format checkpoint every ``TRAIN.CHECKPOINT_PERIOD`` epochs and at the
    last epoch, and the per-epoch history as JSON; both written atomically."""
    if epoch % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or epoch == cfg.SOLVER.MAX_EPOCH:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        payload = {
            "epoch": epoch,
            "model_state": state,
            "optimizer_state": optimizer.state_dict(),
            "cfg": cfg.dump(),
        }
        atomic_save(payload, checkpoint_path(cfg.OUTPUT_DIR, epoch))
    atomic_write_json(history, log_path)
