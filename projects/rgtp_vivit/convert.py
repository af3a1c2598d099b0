"""Convert a TAdaConv "ViViT Fact. Enc." checkpoint file to this project's names (``tools/convert_vivit_checkpoint.py``).

The EPIC noun head (``head.linear2``) is kept as ``noun_classifier`` unless dropped. With a config the result is first
loaded into the configured model: missing, unexpected or wrongly shaped keys are a :class:`CheckpointError` listing
them, and nothing is written. The output is ``{"model_state": ...}``, written atomically.
"""

from __future__ import annotations

import argparse
import logging
from typing import Dict, Sequence

import torch

from rgtp.fileio import atomic_torch_save

from .build import build_model
from .checkpoint import CheckpointError, apply_state, convert_tadaconv_state, is_tadaconv_state
from .config import load_config

__all__ = ["convert_checkpoint_file"]

logger = logging.getLogger("rgtp_vivit.convert")


def convert_checkpoint_file(
    input_path: str,
    output_path: str,
    cfg_file: str = "",
    opts: Sequence[str] = (),
    drop_noun_head: bool = False,
) -> Dict[str, torch.Tensor]:
    """Read ``input_path``, convert it, verify it against the model of ``cfg_file`` (+ ``opts``) when given, and
    write ``{"model_state": converted}`` to ``output_path``; returns the converted state."""
    ckpt = torch.load(input_path, map_location="cpu", weights_only=False)
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not is_tadaconv_state(state):
        raise CheckpointError(
            f"{input_path}: no TAdaConv ViViT model_state (keys 'backbone.*') found"
        )
    converted = convert_tadaconv_state(state, keep_noun_head=not drop_noun_head)
    if cfg_file:
        ns = argparse.Namespace(
            cfg_files=[cfg_file], opts=list(opts), num_shards=None, shard_id=None
        )
        apply_state(build_model(load_config(ns)), converted, input_path)
        logger.info("verified: the converted weights load into the model of %s", cfg_file)
    atomic_torch_save({"model_state": converted}, output_path)
    logger.info("wrote %d tensors to %s", len(converted), output_path)
    return converted
