"""Config keys of the detection project (``MODEL.RGTP.*``, ``MODEL.VIT.*`` and a few others), their validation, and
the translation of ``MODEL.RGTP.*`` into the core's :class:`rgtp.config.RGTPConfig`.

Every key carries a comment; :func:`validate_config` runs at start-up (``tools/train_net.py`` calls it from
``setup``) and fails with a message that names the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any, Iterable

from detectron2.config import CfgNode as CN

from rgtp.config import HEAD_FUSIONS, REL_POS_INTERPS, ROLLOUT_MODES, ConfigError, RGTPConfig

__all__ = ["add_rgtp_config", "validate_config", "rgtp_config_from_cfg", "ConfigError"]


def add_rgtp_config(cfg: CN) -> None:
    """Add every key of this project to a detectron2 ``get_cfg()`` config, in place, with its default."""
    _C = cfg

    # ------------------------------------------------------------------ the pruned ViT backbone (ViTDet-B)
    _C.MODEL.VIT = CN()
    # Checkpoint canvas size: sets the size of the global blocks' relative-position tables (2*IMG_SIZE/16-1).
    # The VID checkpoint frcnn_vitdet_final.pth was trained at 1024, and the 672 rows reuse it, so this stays 1024.
    _C.MODEL.VIT.IMG_SIZE = 1024
    # Square canvas every frame is zero-padded to after normalisation (672 or 1024 in the paper). The padded
    # pixels equal the mean colour, as in the paper. Must be a multiple of PATCH_SIZE.
    _C.MODEL.VIT.INPUT_SIZE = 1024
    # Patch size of the patch embedding (16 for ViTDet-B).
    _C.MODEL.VIT.PATCH_SIZE = 16
    # Token width D.
    _C.MODEL.VIT.EMBED_DIM = 768
    # Number of transformer blocks.
    _C.MODEL.VIT.DEPTH = 12
    # Attention heads per block (EMBED_DIM must be a multiple).
    _C.MODEL.VIT.NUM_HEADS = 12
    # MLP hidden width / EMBED_DIM.
    _C.MODEL.VIT.MLP_RATIO = 4.0
    # Bias on the QKV projection.
    _C.MODEL.VIT.QKV_BIAS = True
    # Absolute position embedding (pretrained 14x14 table, bicubically resized to the token grid).
    _C.MODEL.VIT.USE_ABS_POS = True
    # Decomposed relative-position bias in every block.
    _C.MODEL.VIT.USE_REL_POS = True
    # Window size of the windowed blocks (14 for ViTDet).
    _C.MODEL.VIT.WINDOW_SIZE = 14
    # Indices of the windowed blocks; the others are global blocks (2, 5, 8, 11 for ViTDet-B).
    _C.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0, 1, 3, 4, 6, 7, 9, 10]
    # Image size of the (MAE) pretraining, which sets the absolute table size (224/16)^2.
    _C.MODEL.VIT.PRETRAIN_IMG_SIZE = 224
    # The absolute table has a class-token slot (detectron2 ViTDet checkpoints do).
    _C.MODEL.VIT.PRETRAIN_USE_CLS_TOKEN = True
    # Name of the ViT output feature, fed to the simple feature pyramid.
    _C.MODEL.VIT.OUT_FEATURE = "last_feat"
    # Attention kernel: "explicit" (softmax(QK^T + bias) V, as detectron2's ViT and the official code: detections
    # bit-identical to detectron2 ViTDet, and keep-all bit-identical to dense) or "sdpa" (faster on CPU and GPU:
    # scaled_dot_product_attention wherever the rollout does not need the probabilities; equal to ~1e-6).
    _C.MODEL.VIT.ATTENTION = "explicit"
    # Scales of the simple feature pyramid (ViTDet: 4, 2, 1, 0.5 -> p2..p5, plus p6 by max-pool).
    _C.MODEL.VIT.PYRAMID_SCALES = [4.0, 2.0, 1.0, 0.5]
    # Output channels of every pyramid level.
    _C.MODEL.VIT.PYRAMID_CHANNELS = 256
    # Normalisation in the pyramid ("LN" in ViTDet).
    _C.MODEL.VIT.PYRAMID_NORM = "LN"

    # ------------------------------------------------------------------ Rollout-Guided Token Pruning
    _C.MODEL.RGTP = CN()
    # Prune at all. False = the dense ViTDet baseline (no rollout, no caches): the base configs.
    _C.MODEL.RGTP.ENABLED = True
    # K, the number of tokens kept on pruned frames; -1 = use KEEP_RATIO.
    _C.MODEL.RGTP.KEEP_TOKENS = -1
    # r with K = round(r*N) (N = 1764 at 672, 4096 at 1024); used when KEEP_TOKENS is -1; 1.0 keeps all tokens.
    _C.MODEL.RGTP.KEEP_RATIO = 1.0
    # F: frames with t > 0 and t % F == 0 are reset frames (8 in the paper).
    _C.MODEL.RGTP.RESET_PERIOD = 8
    # Reset frames are processed fully, refreshing every cache (the ViTDet setting).
    _C.MODEL.RGTP.FULL_ON_RESET = True
    # The first frame of each video is processed fully.
    _C.MODEL.RGTP.FIRST_FRAME_FULL = True
    # Blocks whose attention enters the rollout; [] = the global blocks (2, 5, 8, 11), as in the paper.
    _C.MODEL.RGTP.ROLLOUT_BLOCKS = []
    # Head fusion of the attention probabilities: "rms" (the paper), "mean" or "max".
    _C.MODEL.RGTP.HEAD_FUSION = "rms"
    # 2 = the 2x2-pooled forward rollout of the 672 rows; 1 = unpooled.
    _C.MODEL.RGTP.ROLLOUT_POOL = 2
    # "forward" (matrix product; 672 rows) or "backward" (mat-vec from the anchor vector; 1024 rows).
    _C.MODEL.RGTP.ROLLOUT_MODE = "forward"
    # Detections with score strictly above this are rollout anchors (0.1 in the paper); none -> all tokens.
    _C.MODEL.RGTP.ANCHOR_SCORE_THRESH = 0.1
    # Radius of the local backward warp of the heatmap (1 = 3x3 neighbourhood; 0 disables tracking).
    _C.MODEL.RGTP.TRACKING_RADIUS = 1
    # How the global blocks' relative-position tables are resized when the grid differs from IMG_SIZE/16:
    # "paper" (bicubic 2-D, the published numbers) or "detectron2" (linear 1-D, detectron2's ViTDet).
    _C.MODEL.RGTP.REL_POS_INTERP = "paper"
    # Token selection: "rollout" (the method) or "random" (a seeded baseline with the same K).
    _C.MODEL.RGTP.SELECTION = "rollout"
    # Seed of the random baseline.
    _C.MODEL.RGTP.SEED = 0
    # Count backbone FLOPs on every frame (paper convention and executed); cheap, shape arithmetic only.
    _C.MODEL.RGTP.COUNT_FLOPS = True

    # Fail when a checkpoint misses keys, has unexpected ones, or has wrong shapes (the list is printed).
    # Set False only to start training from a partial checkpoint (e.g. MAE-pretrained backbone weights).
    _C.MODEL.WEIGHTS_STRICT = True

    # ------------------------------------------------------------------ video evaluation
    # Frames of this many videos are batched together at test time (one frame per video per batch).
    _C.TEST.VIDEOS_PER_BATCH = 1
    # Also write the per-frame detections of the evaluated split to OUTPUT_DIR/inference/<dataset>.pth.
    _C.TEST.SAVE_PREDICTIONS = True

    # ------------------------------------------------------------------ training (added for the embedded demo)
    # Optimizer of tools/train_net.py training: "SGD" (detectron2's default, momentum SOLVER.MOMENTUM) or "ADAMW"
    # (betas 0.9/0.999, SOLVER.WEIGHT_DECAY; what ViTDet uses, and what trains a small ViT from scratch).
    _C.SOLVER.OPTIMIZER = "SGD"


def _allowed(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"invalid config {key}={value!r}: allowed {allowed}")


def _check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise _allowed(key, value, f"one of {choices}")


def validate_config(cfg: CN) -> None:
    """Check every project key (and the detectron2 keys it depends on); raise :class:`ConfigError` naming the key,
    the value and what is allowed."""
    v = cfg.MODEL.VIT
    r = cfg.MODEL.RGTP
    if v.ATTENTION not in ("explicit", "sdpa"):
        raise _allowed("MODEL.VIT.ATTENTION", v.ATTENTION, "'explicit' or 'sdpa'")
    for key in (
        "IMG_SIZE",
        "INPUT_SIZE",
        "PATCH_SIZE",
        "EMBED_DIM",
        "DEPTH",
        "NUM_HEADS",
        "PRETRAIN_IMG_SIZE",
    ):
        val = v.get(key)
        if not isinstance(val, int) or val < 1:
            raise _allowed(f"MODEL.VIT.{key}", val, "a positive integer")
    if v.EMBED_DIM % v.NUM_HEADS:
        raise _allowed(
            "MODEL.VIT.EMBED_DIM", v.EMBED_DIM, f"a multiple of MODEL.VIT.NUM_HEADS={v.NUM_HEADS}"
        )
    if v.INPUT_SIZE % v.PATCH_SIZE:
        raise _allowed(
            "MODEL.VIT.INPUT_SIZE",
            v.INPUT_SIZE,
            f"a multiple of MODEL.VIT.PATCH_SIZE={v.PATCH_SIZE}",
        )
    if v.INPUT_SIZE % (v.PATCH_SIZE * 2):
        raise _allowed(
            "MODEL.VIT.INPUT_SIZE",
            v.INPUT_SIZE,
            "a multiple of 2*PATCH_SIZE (the p6 pyramid level)",
        )
    bad = [i for i in v.WINDOW_BLOCK_INDEXES if not 0 <= int(i) < v.DEPTH]
    if bad:
        raise _allowed(
            "MODEL.VIT.WINDOW_BLOCK_INDEXES",
            list(v.WINDOW_BLOCK_INDEXES),
            f"indices in 0..{v.DEPTH - 1}",
        )
    if v.WINDOW_SIZE < 1:
        raise _allowed("MODEL.VIT.WINDOW_SIZE", v.WINDOW_SIZE, "a positive integer")
    for s in v.PYRAMID_SCALES:
        _check_choice("MODEL.VIT.PYRAMID_SCALES", s, (4.0, 2.0, 1.0, 0.5))
    _check_choice("MODEL.VIT.PYRAMID_NORM", v.PYRAMID_NORM, ("LN", "", "BN", "GN", "SyncBN"))
    if cfg.INPUT.MAX_SIZE_TEST > v.INPUT_SIZE:
        raise _allowed(
            "INPUT.MAX_SIZE_TEST",
            cfg.INPUT.MAX_SIZE_TEST,
            f"<= MODEL.VIT.INPUT_SIZE={v.INPUT_SIZE} (frames are padded to it)",
        )
    if cfg.INPUT.MAX_SIZE_TRAIN > v.INPUT_SIZE:
        raise _allowed(
            "INPUT.MAX_SIZE_TRAIN",
            cfg.INPUT.MAX_SIZE_TRAIN,
            f"<= MODEL.VIT.INPUT_SIZE={v.INPUT_SIZE} (frames are padded to it)",
        )
    if cfg.INPUT.MIN_SIZE_TEST <= 0:
        raise _allowed(
            "INPUT.MIN_SIZE_TEST",
            cfg.INPUT.MIN_SIZE_TEST,
            "a positive integer (short edge at test time)",
        )
    _check_choice("INPUT.FORMAT", cfg.INPUT.FORMAT, ("RGB", "BGR"))
    if not isinstance(r.ENABLED, bool):
        raise _allowed("MODEL.RGTP.ENABLED", r.ENABLED, "True or False")
    if r.KEEP_TOKENS != -1 and r.KEEP_TOKENS < 1:
        raise _allowed(
            "MODEL.RGTP.KEEP_TOKENS", r.KEEP_TOKENS, "-1 (use KEEP_RATIO) or an integer >= 1"
        )
    if not 0.0 < float(r.KEEP_RATIO) <= 1.0:
        raise _allowed("MODEL.RGTP.KEEP_RATIO", r.KEEP_RATIO, "a ratio in (0, 1]")
    _check_choice("MODEL.RGTP.HEAD_FUSION", r.HEAD_FUSION, HEAD_FUSIONS)
    _check_choice("MODEL.RGTP.ROLLOUT_MODE", r.ROLLOUT_MODE, ROLLOUT_MODES)
    _check_choice("MODEL.RGTP.ROLLOUT_POOL", r.ROLLOUT_POOL, (1, 2))
    _check_choice("MODEL.RGTP.REL_POS_INTERP", r.REL_POS_INTERP, REL_POS_INTERPS)
    _check_choice("MODEL.RGTP.SELECTION", r.SELECTION, ("rollout", "random"))
    if r.ROLLOUT_MODE == "backward" and r.ROLLOUT_POOL != 1:
        raise _allowed(
            "MODEL.RGTP.ROLLOUT_POOL", r.ROLLOUT_POOL, "1 with MODEL.RGTP.ROLLOUT_MODE='backward'"
        )
    if r.RESET_PERIOD < 1:
        raise _allowed("MODEL.RGTP.RESET_PERIOD", r.RESET_PERIOD, "an integer >= 1")
    if r.TRACKING_RADIUS < 0:
        raise _allowed("MODEL.RGTP.TRACKING_RADIUS", r.TRACKING_RADIUS, "an integer >= 0")
    if not 0.0 <= float(r.ANCHOR_SCORE_THRESH) < 1.0:
        raise _allowed("MODEL.RGTP.ANCHOR_SCORE_THRESH", r.ANCHOR_SCORE_THRESH, "a score in [0, 1)")
    bad = [i for i in r.ROLLOUT_BLOCKS if not 0 <= int(i) < v.DEPTH]
    if bad:
        raise _allowed(
            "MODEL.RGTP.ROLLOUT_BLOCKS",
            list(r.ROLLOUT_BLOCKS),
            f"[] or indices in 0..{v.DEPTH - 1}",
        )
    grid = v.INPUT_SIZE // v.PATCH_SIZE
    if r.ENABLED and r.ROLLOUT_POOL > 1 and grid % r.ROLLOUT_POOL:
        raise _allowed(
            "MODEL.RGTP.ROLLOUT_POOL",
            r.ROLLOUT_POOL,
            f"a divisor of the token grid side {grid} (INPUT_SIZE/PATCH_SIZE)",
        )
    if r.ENABLED and r.KEEP_TOKENS > grid * grid:
        raise _allowed(
            "MODEL.RGTP.KEEP_TOKENS",
            r.KEEP_TOKENS,
            f"at most N={grid * grid} tokens at INPUT_SIZE={v.INPUT_SIZE}",
        )
    _check_choice("SOLVER.OPTIMIZER", cfg.SOLVER.OPTIMIZER, ("SGD", "ADAMW"))
    if cfg.TEST.VIDEOS_PER_BATCH < 1:
        raise _allowed("TEST.VIDEOS_PER_BATCH", cfg.TEST.VIDEOS_PER_BATCH, "an integer >= 1")
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES < 1:
        raise _allowed(
            "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES, "an integer >= 1"
        )
    if r.ENABLED:
        rgtp_config_from_cfg(cfg).validate(grid * grid)


def rgtp_config_from_cfg(cfg: CN) -> RGTPConfig:
    """Translate ``MODEL.RGTP.*`` into the core's validated :class:`RGTPConfig`."""
    r = cfg.MODEL.RGTP
    keep_tokens = None if r.KEEP_TOKENS == -1 else int(r.KEEP_TOKENS)
    return RGTPConfig(
        enabled=bool(r.ENABLED),
        keep_tokens=keep_tokens,
        keep_ratio=None if keep_tokens is not None else float(r.KEEP_RATIO),
        reset_period=int(r.RESET_PERIOD),
        full_on_reset=bool(r.FULL_ON_RESET),
        first_frame_full=bool(r.FIRST_FRAME_FULL),
        rollout_blocks=tuple(int(i) for i in r.ROLLOUT_BLOCKS) or None,
        head_fusion=str(r.HEAD_FUSION),
        rollout_pool=int(r.ROLLOUT_POOL),
        rollout_mode=str(r.ROLLOUT_MODE),
        anchor_score_thresh=float(r.ANCHOR_SCORE_THRESH),
        tracking_radius=int(r.TRACKING_RADIUS),
        rel_pos_interp=str(r.REL_POS_INTERP),
        selection=str(r.SELECTION),
        seed=int(r.SEED),
    )
