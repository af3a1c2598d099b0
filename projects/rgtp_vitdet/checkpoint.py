"""Checkpoint loading and key mapping.

* :class:`RGTPCheckpointer`: detectron2's ``DetectionCheckpointer`` that, in strict mode, fails with the full list of
  missing, unexpected and wrongly shaped keys instead of logging a warning.
* :func:`convert_state_dict`: maps the checkpoint layouts we know onto detectron2 ViTDet names (the names of our
  model): detectron2 / ``frcnn_vitdet_final.pth`` (unchanged), DDP ``module.`` prefixes, MAE-pretrained ViT-B
  (``blocks.*`` -> ``backbone.net.blocks.*``), and the Eventful/RGTP converted backbone names
  (``backbone.blocks.i.qkv`` ...).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Dict, List, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer

from rgtp.fileio import atomic_torch_save, atomic_write_text

__all__ = ["CheckpointError", "RGTPCheckpointer", "convert_state_dict", "detect_layout"]

logger = logging.getLogger("detectron2.rgtp_vitdet.checkpoint")


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model; the message lists the missing, unexpected and mis-shaped keys."""


def _fmt(keys: List[str], limit: int = 40) -> str:
    keys = sorted(keys)
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return "".join(f"\n    {k}" for k in keys[:limit]) + more


_RECOGNISER_PREFIXES = ("spatial.", "temporal.", "classifier.", "noun_classifier.", "model.")


def recogniser_checkpoint_kind(checkpoint: dict) -> str:
    """A description of ``checkpoint`` when it is a ViViT recogniser checkpoint (our ``model_state`` or a TAdaConv
    ``model_state``/``state_dict``), else ''."""
    ours = False
    sd = checkpoint
    for _ in range(2):  # fvcore wraps a file without a "model" entry as {"model": <the file>}
        if isinstance(sd.get("model_state"), dict):
            sd, ours = sd["model_state"], True
            break
        if isinstance(sd.get("model"), dict):
            sd = sd["model"]
    if not isinstance(sd, dict) or not sd:
        return ""
    keys = [k for k in sd if isinstance(k, str)]
    if ours or (
        keys and sum(k.startswith(("spatial.", "temporal.")) for k in keys) >= len(keys) // 2 + 1
    ):
        return f"a ViViT recogniser checkpoint ({len(keys)} keys in model_state)"
    return ""


class RGTPCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with a strict mode: any missing, unexpected or wrongly shaped model key raises
    :class:`CheckpointError` listing them (detectron2 only warns). Checkpoints in a non-detectron2 layout that
    :func:`convert_state_dict` recognises are mapped on the fly."""

    def __init__(
        self, model: torch.nn.Module, save_dir: str = "", *, strict: bool = True, **kwargs
    ) -> None:
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict

    def _load_model(self, checkpoint: dict):
        kind = recogniser_checkpoint_kind(checkpoint)
        if kind:
            raise CheckpointError(
                f"checkpoint {getattr(self, '_path', '?')!r} is {kind}, not a ViTDet detector checkpoint: give it "
                f"to tools/vivit_net.py or tools/demo_video.py --task recognition (TEST.CHECKPOINT_FILE_PATH), and "
                f"give the detector a detectron2 ViTDet checkpoint (MODEL.WEIGHTS; see docs/detection.md)"
            )
        sd = checkpoint.get("model")
        if isinstance(sd, dict) and not checkpoint.get("matching_heuristics", False):
            layout = detect_layout(sd)
            if layout not in ("detectron2",):
                logger.info(
                    f"Mapping checkpoint keys from the {layout!r} layout to detectron2 ViTDet names"
                )
                checkpoint["model"] = convert_state_dict(sd, layout)
        incompatible = super()._load_model(checkpoint)
        if self.strict:
            missing = list(incompatible.missing_keys)
            unexpected = list(incompatible.unexpected_keys)
            shapes = [
                f"{k}: checkpoint {a}, model {b}" for k, a, b in incompatible.incorrect_shapes
            ]
            if missing or unexpected or shapes:
                raise CheckpointError(
                    f"checkpoint {getattr(self, '_path', '?')!r} does not fit the model "
                    f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} wrongly shaped keys; "
                    f"convert it with tools/convert_vitdet_checkpoint.py or set MODEL.WEIGHTS_STRICT False to load "
                    f"it partially)."
                    + (f"\n  missing keys:{_fmt(missing)}" if missing else "")
                    + (f"\n  unexpected keys:{_fmt(unexpected)}" if unexpected else "")
                    + (f"\n  wrongly shaped keys:{_fmt(shapes)}" if shapes else "")
                )
        return incompatible

    def load(self, path: str, *args, **kwargs):
        """Load ``path`` (see ``DetectionCheckpointer.load``); strict mode raises on any key mismatch."""
        self._path = path
        return super().load(path, *args, **kwargs)

    def save(self, name: str, **kwargs) -> None:
        """fvcore's ``Checkpointer.save`` (``{"model", <checkpointables>, **kwargs}`` to ``save_dir/<name>.pth``,
        then the ``last_checkpoint`` tag), both written atomically (:mod:`rgtp.fileio`): an interrupted save
        leaves the previous checkpoint and tag intact."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Write ``save_dir/last_checkpoint`` atomically."""
        atomic_write_text(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))


# --------------------------------------------------------------------------------------------- key mapping
_EVENTFUL_BLOCK = [
    (r"input_layer_norm\.", "norm1."),
    (r"qkv\.", "attn.qkv."),
    (r"relative_position\.y_embedding", "attn.rel_pos_h"),
    (r"relative_position\.x_embedding", "attn.rel_pos_w"),
    (r"projection\.", "attn.proj."),
    (r"mlp_layer_norm\.", "norm2."),
    (r"mlp_1\.", "mlp.fc1."),
    (r"mlp_2\.", "mlp.fc2."),
]


def detect_layout(sd: Dict[str, object]) -> str:
    """Guess the naming layout of a state dict: ``detectron2``, ``ddp`` (``module.`` prefix), ``mae`` (a bare ViT:
    ``blocks.0.attn.qkv.weight``) or ``eventful`` (``backbone.blocks.0.qkv.weight``)."""
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return "ddp"
    if any(k.startswith("backbone.net.") for k in keys):
        return "detectron2"
    if any(re.match(r"backbone\.blocks\.\d+\.(qkv|input_layer_norm)", k) for k in keys):
        return "eventful"
    if any(re.match(r"blocks\.\d+\.attn\.qkv", k) for k in keys):
        return "mae"
    return "detectron2"


def convert_state_dict(
    sd: Dict[str, torch.Tensor], layout: str = "auto"
) -> Dict[str, torch.Tensor]:
    """Map ``sd`` from ``layout`` (or the detected one) to detectron2 ViTDet names. Keys that have no counterpart
    (the MAE class token and final norm) are dropped with a log line; everything else passes through.
    """
    if layout == "auto":
        layout = detect_layout(sd)
    if layout == "detectron2":
        return dict(sd)
    if layout == "ddp":
        inner = {k[len("module.") :]: v for k, v in sd.items()}
        return convert_state_dict(inner, "auto")
    out: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    if layout == "mae":
        for k, v in sd.items():
            if k in ("cls_token", "mask_token") or k.startswith(
                ("norm.", "fc_norm.", "head.", "decoder")
            ):
                dropped.append(k)
                continue
            out[f"backbone.net.{k}"] = v
    elif layout == "eventful":
        for k, v in sd.items():
            m = re.match(r"backbone\.blocks\.(\d+)\.(.*)", k)
            if m:
                rest = m.group(2)
                for pat, rep in _EVENTFUL_BLOCK:
                    rest2 = re.sub("^" + pat, rep, rest)
                    if rest2 != rest:
                        rest = rest2
                        break
                out[f"backbone.net.blocks.{m.group(1)}.{rest}"] = v
            elif k.startswith("embedding.conv."):
                out["backbone.net.patch_embed.proj." + k[len("embedding.conv.") :]] = v
            elif k == "backbone.position_encoding.encoding":
                out["backbone.net.pos_embed"] = _with_cls_slot(v)
            else:
                out[k] = (
                    v  # RPN / ROI heads pass through unchanged; pyramid keys are reported if unmatched
                )
    else:
        raise ValueError(
            f"unknown checkpoint layout {layout!r}: allowed auto, detectron2, ddp, mae, eventful"
        )
    if dropped:
        logger.info(f"Dropped {len(dropped)} keys with no counterpart in ViTDet: {dropped}")
    return out


def _with_cls_slot(pos: torch.Tensor) -> torch.Tensor:
    """Eventful stores the absolute table without the class slot: put a zero slot back, (1, 1+M², C)."""
    c = pos.shape[-1]
    table = pos.reshape(1, -1, c)
    return torch.cat([table.new_zeros(1, 1, c), table], dim=1)


def load_state_dict_file(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Read a ``.pth`` / ``.pkl`` checkpoint and return (model state dict, the whole checkpoint object)."""
    if path.endswith(".pkl"):
        import pickle

        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key], obj
    return obj, {"model": obj}
