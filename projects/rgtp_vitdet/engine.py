"""Evaluation and trainer of the video detector (used by ``tools/train_net.py``).

Evaluation is detectron2's ``inference_on_dataset`` with :func:`stream_callbacks`: the model's per-video stream
states are reset when a pass starts and when it ends (no state leaks from one split, or from training, into the
next), and a progress bar advances per batch. The per-video bookkeeping (video ids, frame types, timing, FLOPs)
lives in :class:`~rgtp_vitdet.evaluator.VIDEvaluator`.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence, Union

import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from tqdm import tqdm

from rgtp.fileio import atomic_write_json, json_safe

from .checkpoint import RGTPCheckpointer
from .data import build_vid_test_loader
from .evaluator import VIDEvaluator

__all__ = ["stream_callbacks", "RGTPTrainer", "load_weights", "atomic_write_json"]

logger = logging.getLogger("detectron2.rgtp_vitdet.engine")


def stream_callbacks(
    model: torch.nn.Module, total: Optional[int] = None, desc: str = ""
) -> Dict[str, Callable[[], None]]:
    """The ``callbacks`` of detectron2's ``inference_on_dataset`` for a streaming detector: ``on_start`` and
    ``on_end`` drop every per-video stream state (``model.reset_streams()``, through a DDP wrapper too), and a
    progress bar (main process only) advances after each batch."""
    inner = model.module if hasattr(model, "module") else model
    reset = getattr(inner, "reset_streams", lambda: None)
    bar: Dict[str, tqdm] = {}

    def on_start() -> None:
        reset()
        bar["bar"] = tqdm(
            total=total,
            desc=desc or "inference",
            unit="batch",
            disable=not comm.is_main_process(),
            leave=False,
        )

    def after_inference() -> None:
        if "bar" in bar:
            bar["bar"].update(1)

    def on_end() -> None:
        reset()
        if "bar" in bar:
            bar.pop("bar").close()

    return {"on_start": on_start, "after_inference": after_inference, "on_end": on_end}


def check_measured(results: Dict[str, dict]) -> None:
    """Raise :class:`rgtp.cli.UserError` when a split's evaluation measured nothing (no frame, or no ground-truth
    box so that AP50 is undefined); ``results`` maps split names to evaluator results."""
    from rgtp.cli import UserError

    for name, res in results.items():
        b = res.get("bbox") if isinstance(res, dict) else None
        if not b:
            raise UserError(
                f"nothing was measured on {name!r}: no frame was evaluated (see DATASETS.TEST and "
                f"docs/detection.md for the dataset layouts under $RGTP_DATASETS)"
            )
        if b.get("AP50") is None:
            raise UserError(
                f"nothing was measured on {name!r}: {b.get('AP50_reason', 'AP50 is undefined')}; the results "
                f"(with null metrics) are in OUTPUT_DIR/inference/results_{name}.json"
            )


def resolve_weights(cfg: CfgNode, config_file: str = "") -> str:
    """``MODEL.WEIGHTS`` resolved: a relative path is taken relative to the working directory when it exists
    there, else relative to the repository root; '' and URLs pass unchanged. A file found nowhere raises
    FileNotFoundError naming the key, the config file (when given) and every place looked at."""
    from rgtp.cli import UserError, resolve_config_path

    path = cfg.MODEL.WEIGHTS
    try:
        return resolve_config_path(path, "MODEL.WEIGHTS", config_file)
    except UserError as e:
        raise FileNotFoundError(
            f"checkpoint {e} (see docs/detection.md, section 'Checkpoints'; MODEL.WEIGHTS '' evaluates random "
            f"weights)"
        ) from None


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
    path = resolve_weights(cfg)
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
        cls,
        cfg: CfgNode,
        model: torch.nn.Module,
        evaluators: Union[DatasetEvaluator, Sequence[DatasetEvaluator], None] = None,
    ) -> "OrderedDict[str, dict]":
        """Evaluate on every ``DATASETS.TEST`` split, as detectron2's ``DefaultTrainer.test``: ``evaluators`` (one
        per split, in order; a single evaluator for a single split) replace :meth:`build_evaluator`. Each split
        runs through ``inference_on_dataset`` with :func:`stream_callbacks`; the main process writes
        ``OUTPUT_DIR/inference/results_<split>.json`` (strict JSON) and logs the headline numbers. One split
        returns its results, several an ``OrderedDict`` by split name (empty on the other processes).
        """
        names = list(cfg.DATASETS.TEST)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(names):
            raise ValueError(
                f"RGTPTrainer.test: {len(evaluators)} evaluators given for the {len(names)} splits of "
                f"DATASETS.TEST {names}: give one per split, in order"
            )
        results: "OrderedDict[str, dict]" = OrderedDict()
        for idx, name in enumerate(names):
            loader = cls.build_test_loader(cfg, name)
            evaluator = (
                evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
            )
            callbacks = stream_callbacks(model, len(loader), desc=name)
            res = inference_on_dataset(model, loader, evaluator, callbacks=callbacks)
            if not comm.is_main_process():
                continue
            results[name] = res
            atomic_write_json(
                json_safe(res), os.path.join(cfg.OUTPUT_DIR, "inference", f"results_{name}.json")
            )
            b = res.get("bbox", {})

            def num(key: str, fmt: str, b: dict = b) -> str:
                v = b.get(key)
                return "undefined" if v is None else format(v, fmt)

            logger.info(
                f"[{name}] AP50 {num('AP50', '.2f')} (paper metric) | AP50_devkit "
                f"{num('AP50_devkit', '.2f')} | GFLOPs/frame paper "
                f"{num('gflops_paper', '.4f')} executed {num('gflops_executed', '.4f')}"
                f" | {num('fps', '.2f')} fps"
                + (f" | AP50 undefined: {b['AP50_reason']}" if b.get("AP50_reason") else "")
            )
        if len(results) == 1:
            return list(results.values())[0]  # type: ignore[return-value]
        return results
