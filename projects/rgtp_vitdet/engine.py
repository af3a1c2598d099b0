"""Evaluation loop and trainer for the video detector (used by ``tools/train_net.py``)."""

from __future__ import annotations

import json
import logging
import os
import weakref
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from tqdm import tqdm

from .checkpoint import RGTPCheckpointer
from .data import build_vid_test_loader
from .evaluator import VIDEvaluator

__all__ = ["inference_on_videos", "RGTPTrainer", "load_weights", "atomic_write_json"]

logger = logging.getLogger("detectron2.rgtp_vitdet.engine")


def atomic_write_json(obj: object, path: str) -> None:
    """Write JSON to a temporary file next to ``path``, then rename it into place."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def inference_on_videos(
    model: torch.nn.Module,
    data_loader: torch.utils.data.DataLoader,
    evaluator: DatasetEvaluator,
    desc: str = "",
) -> Optional[Dict[str, Dict[str, float]]]:
    """Run ``model`` over this process's videos (frame order, states carried by the model) under inference mode,
    feed ``evaluator``, and return its results (on the main process)."""
    was_training = model.training
    model.eval()
    inner = model.module if hasattr(model, "module") else model
    if hasattr(inner, "reset_streams"):
        inner.reset_streams()
    evaluator.reset()
    try:
        with torch.inference_mode():
            bar = tqdm(
                data_loader,
                total=len(data_loader),
                desc=desc or "inference",
                unit="batch",
                disable=not comm.is_main_process(),
                leave=False,
            )
            for inputs in bar:
                outputs = model(inputs)
                evaluator.process(inputs, outputs)
        if hasattr(inner, "reset_streams"):
            inner.reset_streams()
        results = evaluator.evaluate()
    finally:
        model.train(was_training)
    return results


def load_weights(cfg: CfgNode, model: torch.nn.Module) -> None:
    """Load ``MODEL.WEIGHTS`` (strict per ``MODEL.WEIGHTS_STRICT``); with no weights, evaluate random weights that
    are identical on every process (broadcast from rank 0)."""
    path = cfg.MODEL.WEIGHTS
    if not path:
        logger.warning("MODEL.WEIGHTS is empty: evaluating a randomly initialised model")
        if comm.get_world_size() > 1:
            with torch.no_grad():
                for t in list(model.state_dict().values()):
                    dist.broadcast(t, src=0)
        return
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint MODEL.WEIGHTS={path!r} not found (looked at {os.path.abspath(path)!r}). See "
            f"docs/detection.md, section 'Checkpoints', for where to get frcnn_vitdet_final.pth; pass "
            f"MODEL.WEIGHTS '' to evaluate random weights."
        )
    RGTPCheckpointer(model, cfg.OUTPUT_DIR, strict=cfg.MODEL.WEIGHTS_STRICT).load(path)


class RGTPTrainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` with the video test loader, the VID evaluator and the strict checkpointer.
    Training runs the dense ViTDet (the model is in training mode); evaluation runs RGTP per video.
    """

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        self.checkpointer = RGTPCheckpointer(
            self._trainer.model,
            cfg.OUTPUT_DIR,
            strict=cfg.MODEL.WEIGHTS_STRICT,
            trainer=weakref.proxy(self),
        )

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        """detectron2's SGD, or AdamW with ``SOLVER.OPTIMIZER: ADAMW`` (same parameter groups: no weight decay on
        norms and biases as configured, gradient clipping as configured)."""
        if cfg.SOLVER.OPTIMIZER != "ADAMW":
            return super().build_optimizer(cfg, model)
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_vid_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return VIDEvaluator(
            dataset_name,
            distributed=True,
            output_dir=output_folder,
            save_predictions=cfg.TEST.SAVE_PREDICTIONS,
        )

    @classmethod
    def test(
        cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None
    ) -> "OrderedDict[str, dict]":
        """Evaluate on every ``DATASETS.TEST`` split; write ``OUTPUT_DIR/inference/results_<split>.json``."""
        results: "OrderedDict[str, dict]" = OrderedDict()
        for name in cfg.DATASETS.TEST:
            loader = cls.build_test_loader(cfg, name)
            evaluator = cls.build_evaluator(cfg, name)
            res = inference_on_videos(model, loader, evaluator, desc=name)
            if comm.is_main_process() and res is not None:
                results[name] = res
                atomic_write_json(
                    res, os.path.join(cfg.OUTPUT_DIR, "inference", f"results_{name}.json")
                )
                b = res.get("bbox", {})
                logger.info(
                    f"[{name}] AP50 {b.get('AP50', float('nan')):.2f} (paper metric) | AP50_devkit "
                    f"{b.get('AP50_devkit', float('nan')):.2f} | GFLOPs/frame paper "
                    f"{b.get('gflops_paper', float('nan')):.4f} executed {b.get('gflops_executed', float('nan')):.4f}"
                    f" | {b.get('fps', float('nan')):.2f} fps"
                )
        if len(results) == 1:
            return list(results.values())[0]  # type: ignore[return-value]
        return results
