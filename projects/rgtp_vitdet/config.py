"""Config keys of the detection project (``MODEL.RGTP.*``, ``MODEL.VIT.*`` and a few others), their validation, and
the translation of ``MODEL.RGTP.*`` into the core's :class:`rgtp.config.RGTPConfig`.

Every key carries a comment. The keys of core settings are the table :data:`RGTP_KEYS` (core field -> key), read by
:func:`rgtp.config_table.from_table`, the one translation behind both projects: the core's validation is the only
source of their allowed values. The project's own keys are checked by :func:`validate_config` (run at start-up by
:func:`load_config`) in the same style: ``invalid config MODEL.RGTP.KEEP_TOKENS=-1: allowed an integer >= 1, or 0 =
use MODEL.RGTP.KEEP_RATIO``.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from rgtp import config_table as table
from rgtp.attention import ATTENTION_KERNELS
from rgtp.config import ConfigError, RGTPConfig
from rgtp.config_table import (
    BOOL,
    FLOAT,
    INT,
    INTS,
    STR,
    Key,
    boolean,
    each,
    integer,
    number,
    one_of,
)

__all__ = [
    "add_rgtp_config",
    "load_config",
    "validate_config",
    "rgtp_config_from_cfg",
    "behaviour_setting",
    "RGTP_KEYS",
    "ConfigError",
]


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
    # K, the number of tokens kept on pruned frames; 0 = use KEEP_RATIO (the same in RGTP.KEEP_TOKENS of ViViT).
    _C.MODEL.RGTP.KEEP_TOKENS = 0
    # r with K = round(r*N) (N = 1764 at 672, 4096 at 1024); used when KEEP_TOKENS is 0; 1.0 keeps all tokens.
    _C.MODEL.RGTP.KEEP_RATIO = 1.0
    # F: frames with t > 0 and t % F == 0 are reset frames (8 in the paper).
    _C.MODEL.RGTP.RESET_PERIOD = 8
    # Reset frames are processed fully, refreshing every cache (the ViTDet setting).
    _C.MODEL.RGTP.FULL_ON_RESET = True
    # The grid pattern ("1in2" checkerboard, "1in4") that keeps tokens on reset frames when FULL_ON_RESET is False
    # (the ViViT schedule); "" = none.
    _C.MODEL.RGTP.RESET_PATTERN = ""
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
    # Token selection: "rollout" (the method), "random" (a seeded baseline with the same K) or "change" (the
    # Eventful-style baseline: the K tokens whose patch embedding changed most since they were last computed).
    _C.MODEL.RGTP.SELECTION = "rollout"
    # Seed of the random baseline.
    _C.MODEL.RGTP.SEED = 0
    # Reset at shot cuts: a pruned frame whose match quality against the previous frame (mean cosine similarity of
    # each token's best tracking match) is below this value is processed as a reset frame (cause "cut"); -1.0 =
    # off (periodic resets only; the paper's configs). Otherwise a cosine similarity in (-1, 1].
    # RGTPConfig.cut_threshold.
    _C.MODEL.RGTP.CUT_THRESHOLD = -1.0
    # The preset of the official code's quirks (docs/method.md §10.2, §11): "clean" (this project's rules) or
    # "official" (the official code's, to reproduce the published numbers exactly). Each quirk key below left at ""
    # takes its value from this preset; an explicit value overrides it, one quirk at a time.
    _C.MODEL.RGTP.BEHAVIOUR = "clean"
    # Order among exactly tied importance scores at rank K: "low" (lower index first; clean), "high" (higher
    # index first; official), "" = from BEHAVIOUR. RGTPConfig.tie_break.
    _C.MODEL.RGTP.TIE_BREAK = ""
    # Out-of-grid candidates of the tracking warp: "exclude" (never win; clean), "official" (similarity -100 and
    # source token 0; official), "" = from BEHAVIOUR. RGTPConfig.tracking_border.
    _C.MODEL.RGTP.TRACKING_BORDER = ""
    # What the RPN and ROI heads clip boxes to at test time: "image" (the resized frame; clean) or "padded" (the
    # square INPUT_SIZE canvas, as the official code: boxes, and so rollout anchors, may reach into the padding,
    # and the returned detections are not clipped to the frame afterwards), "" = from BEHAVIOUR. Also applies
    # with ENABLED False (the dense baselines).
    _C.MODEL.RGTP.CLIP_BOXES_TO = ""
    # The VID test resize (rgtp_vitdet.data.resize_frame): "float" (bilinear + antialias, kept as floats; clean)
    # or "uint8" (rounded back to 8 bits before normalisation, as the official code), "" = from BEHAVIOUR.
    _C.MODEL.RGTP.RESIZE_ROUNDING = ""
    # Count backbone FLOPs on every frame (paper convention and executed); cheap, shape arithmetic only.
    _C.MODEL.RGTP.COUNT_FLOPS = True
    # Pruned frames recompute the feature pyramid and the RPN convolutions only where the kept tokens change them
    # (per-stream caches of their maps; equal to the dense head to float rounding; rgtp_vitdet.regions). Full
    # and reset frames run the dense head and refill the caches.
    _C.MODEL.RGTP.INCREMENTAL_HEAD = True

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


#: The keys of the core settings: RGTPConfig field -> its key in ``MODEL.RGTP`` (read by
#: :func:`rgtp.config_table.from_table`; the core checks the values). A key's ``none`` value stands for the field's
#: None: KEEP_TOKENS 0 = use KEEP_RATIO, ROLLOUT_BLOCKS [] = the model's default (the global blocks), CUT_THRESHOLD
#: -1 = off, a quirk "" = from BEHAVIOUR.
RGTP_KEYS = {
    "enabled": Key("ENABLED", BOOL),
    "keep_tokens": Key("KEEP_TOKENS", INT, none=0, none_means="use keep_ratio"),
    "keep_ratio": Key("KEEP_RATIO", FLOAT, unless="keep_tokens"),
    "reset_period": Key("RESET_PERIOD", INT),
    "full_on_reset": Key("FULL_ON_RESET", BOOL),
    "reset_pattern": Key("RESET_PATTERN", STR, none=""),
    "first_frame_full": Key("FIRST_FRAME_FULL", BOOL),
    "rollout_blocks": Key("ROLLOUT_BLOCKS", INTS, none=[], none_means="the global blocks"),
    "head_fusion": Key("HEAD_FUSION", STR),
    "rollout_pool": Key("ROLLOUT_POOL", INT),
    "rollout_mode": Key("ROLLOUT_MODE", STR),
    "tracking_radius": Key("TRACKING_RADIUS", INT),
    "rel_pos_interp": Key("REL_POS_INTERP", STR),
    "selection": Key("SELECTION", STR),
    "seed": Key("SEED", INT),
    "cut_threshold": Key("CUT_THRESHOLD", FLOAT, none=-1.0, none_means="off"),
    "behaviour": Key("BEHAVIOUR", STR),
    "tie_break": Key("TIE_BREAK", STR, none=""),
    "tracking_border": Key("TRACKING_BORDER", STR, none=""),
}
PREFIX = "MODEL.RGTP"

#: What ``MODEL.RGTP.BEHAVIOUR`` sets for the project's own quirk keys left at "" (the core's quirks, TIE_BREAK
#: and TRACKING_BORDER, are resolved by RGTPConfig from rgtp.config.BEHAVIOUR_PRESETS).
BEHAVIOUR_KEYS = {
    "clean": {"CLIP_BOXES_TO": "image", "RESIZE_ROUNDING": "float"},
    "official": {"CLIP_BOXES_TO": "padded", "RESIZE_ROUNDING": "uint8"},
}

#: The project's own keys, each with what it allows.
PROJECT_RULES = {
    "MODEL.VIT.ATTENTION": one_of(*ATTENTION_KERNELS),
    **{
        f"MODEL.VIT.{k}": integer(1)
        for k in (
            "IMG_SIZE",
            "INPUT_SIZE",
            "PATCH_SIZE",
            "EMBED_DIM",
            "DEPTH",
            "NUM_HEADS",
            "WINDOW_SIZE",
            "PRETRAIN_IMG_SIZE",
        )
    },
    "MODEL.VIT.PYRAMID_SCALES": each(one_of(4.0, 2.0, 1.0, 0.5)),
    "MODEL.VIT.PYRAMID_NORM": one_of("LN", "", "BN", "GN", "SyncBN"),
    "INPUT.MIN_SIZE_TEST": integer(1),
    "INPUT.FORMAT": one_of("RGB", "BGR"),
    "MODEL.RGTP.ANCHOR_SCORE_THRESH": number(0.0, 1.0, "[)"),
    "MODEL.RGTP.COUNT_FLOPS": boolean(),
    "MODEL.RGTP.INCREMENTAL_HEAD": boolean(),
    "SOLVER.OPTIMIZER": one_of("SGD", "ADAMW"),
    "TEST.VIDEOS_PER_BATCH": integer(1),
    "MODEL.ROI_HEADS.NUM_CLASSES": integer(1),
}


def behaviour_setting(cfg: CN, key: str) -> str:
    """The value of the project quirk ``MODEL.RGTP.<key>`` (``CLIP_BOXES_TO`` or ``RESIZE_ROUNDING``): the key
    itself when set, else what ``MODEL.RGTP.BEHAVIOUR`` gives it. Raises :class:`ConfigError` on a bad value.
    """
    behaviour = table.read_field(cfg.MODEL.RGTP, RGTP_KEYS, PREFIX, "behaviour")
    value = cfg.MODEL.RGTP.get(key)
    if value == "":
        return BEHAVIOUR_KEYS[behaviour][key]
    allowed = tuple(p[key] for p in BEHAVIOUR_KEYS.values())
    if value not in allowed:
        raise table.config_error(
            f"{PREFIX}.{key}", value, f"one of {allowed} ('' = from {PREFIX}.BEHAVIOUR)"
        )
    return value


def validate_config(cfg: CN) -> None:
    """Check every project key (and the detectron2 keys it depends on) and the core settings (through
    :func:`rgtp_config_from_cfg`); raise :class:`ConfigError` naming the key, the value and what is allowed.
    """
    table.check_keys(cfg, PROJECT_RULES)
    v, r = cfg.MODEL.VIT, cfg.MODEL.RGTP
    fail = table.config_error
    if v.EMBED_DIM % v.NUM_HEADS:
        raise fail(
            "MODEL.VIT.EMBED_DIM", v.EMBED_DIM, f"a multiple of MODEL.VIT.NUM_HEADS={v.NUM_HEADS}"
        )
    if v.INPUT_SIZE % (v.PATCH_SIZE * 2):
        raise fail(
            "MODEL.VIT.INPUT_SIZE",
            v.INPUT_SIZE,
            f"a multiple of 2*MODEL.VIT.PATCH_SIZE={2 * v.PATCH_SIZE} (the p6 pyramid level)",
        )
    for key, name in (("WINDOW_BLOCK_INDEXES", "MODEL.VIT"), ("ROLLOUT_BLOCKS", PREFIX)):
        blocks = list(cfg.MODEL.VIT[key] if name == "MODEL.VIT" else r[key])
        if any(not 0 <= int(i) < v.DEPTH for i in blocks):
            raise fail(f"{name}.{key}", blocks, f"indices in 0..{v.DEPTH - 1} (MODEL.VIT.DEPTH)")
    for key in ("MAX_SIZE_TEST", "MAX_SIZE_TRAIN"):
        if cfg.INPUT[key] > v.INPUT_SIZE:
            raise fail(
                f"INPUT.{key}",
                cfg.INPUT[key],
                f"<= MODEL.VIT.INPUT_SIZE={v.INPUT_SIZE} (frames are padded to it)",
            )
    for key in BEHAVIOUR_KEYS["clean"]:
        behaviour_setting(cfg, key)
    grid = v.INPUT_SIZE // v.PATCH_SIZE
    if r.ENABLED and r.ROLLOUT_POOL > 1 and grid % r.ROLLOUT_POOL:
        raise fail(
            f"{PREFIX}.ROLLOUT_POOL",
            r.ROLLOUT_POOL,
            f"a divisor of the token grid side {grid} (MODEL.VIT.INPUT_SIZE/PATCH_SIZE)",
        )
    table.from_table(r, RGTP_KEYS, PREFIX, num_tokens=grid * grid)


def rgtp_config_from_cfg(cfg: CN) -> RGTPConfig:
    """Translate ``MODEL.RGTP.*`` into the core's validated :class:`RGTPConfig` (:data:`RGTP_KEYS`)."""
    return table.from_table(cfg.MODEL.RGTP, RGTP_KEYS, PREFIX)


def load_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """detectron2's ``get_cfg()`` with this project's keys, ``config_file`` and the ``KEY VALUE`` pairs ``opts``
    merged in, validated (not frozen). A missing file, a bad key or value raises :class:`ConfigError` naming it.
    """
    if not config_file:
        raise ConfigError("--config-file is required (e.g. configs/vid/keep512.yaml)")
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file {config_file!r} does not exist")
    cfg = get_cfg()
    add_rgtp_config(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", SyntaxWarning
        )  # yacs literal_eval()s strings such as "1in2"
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, AssertionError, ValueError) as e:
            raise ConfigError(f"bad config file {config_file}: {e}") from None
        if len(opts) % 2:
            raise ConfigError(
                f"trailing config overrides must be KEY VALUE pairs, got {list(opts)}"
            )
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError, ValueError) as e:
            raise ConfigError(
                f"bad config override: {e} (overrides of {config_file}; keys are listed in "
                f"docs/detection.md)"
            ) from None
    validate_config(cfg)
    return cfg
