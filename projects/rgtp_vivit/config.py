"""fvcore ``CfgNode`` defaults of the ViViT recogniser (PySlowFast style), config loading and validation.

Sections: ``MODEL``, ``VIVIT``, ``RGTP``, ``DATA``, ``DATA_LOADER``, ``TEST``, ``TRAIN``, ``CACHE``, ``SOLVER``,
plus ``NUM_GPUS``, ``NUM_SHARDS``, ``SHARD_ID``, ``OUTPUT_DIR`` and ``RNG_SEED``. ``load_config(args)`` merges the
``--cfg`` files (``_BASE_`` inheritance) and the trailing ``KEY VALUE`` pairs, then validates.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any, List, Optional, Sequence

from fvcore.common.config import CfgNode

from rgtp.config import ConfigError, RGTPConfig

_C = CfgNode()

# Number of processes per machine (one per GPU; on a machine without CUDA, NUM_GPUS CPU processes using gloo).
_C.NUM_GPUS = 1
# Number of machines.
_C.NUM_SHARDS = 1
# Index of this machine.
_C.SHARD_ID = 0
# Where logs, results, caches and checkpoints go (relative paths are relative to the working directory).
_C.OUTPUT_DIR = "./output/vivit"
# Seed of the fine-tune (method.md §8: 42).
_C.RNG_SEED = 42
# Distributed backend: "" picks nccl with CUDA, gloo otherwise.
_C.DIST_BACKEND = ""

# ---------------------------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# Registered model name (MODEL_REGISTRY).
_C.MODEL.MODEL_NAME = "ViViT"
# Classes of the main (verb for EPIC) classifier.
_C.MODEL.NUM_CLASSES = 400
# Classes of the EPIC noun head; 0 = no noun head.
_C.MODEL.NUM_NOUN_CLASSES = 0
# Dropout before the classifier (active only while fine-tuning).
_C.MODEL.DROPOUT_RATE = 0.5

# ---------------------------------------------------------------------------------------------------------------
_C.VIVIT = CfgNode()
# Spatial patch size of the tubelet embedding (Conv3d kernel = stride = TUBELET_SIZE x PATCH_SIZE x PATCH_SIZE).
_C.VIVIT.PATCH_SIZE = 16
# Temporal size of a tubelet.
_C.VIVIT.TUBELET_SIZE = 2
# Transformer width, heads and MLP ratio.
_C.VIVIT.EMBED_DIM = 768
_C.VIVIT.NUM_HEADS = 12
_C.VIVIT.MLP_RATIO = 4.0
# Depth of the spatial and of the temporal transformer.
_C.VIVIT.SPATIAL_DEPTH = 12
_C.VIVIT.TEMPORAL_DEPTH = 4
# Bias in the qkv projection.
_C.VIVIT.QKV_BIAS = True
# LayerNorm epsilon.
_C.VIVIT.LN_EPS = 1e-6

# ---------------------------------------------------------------------------------------------------------------
_C.RGTP = CfgNode()
# Prune the spatial model with RGTP; False = the dense baseline (no rollout either).
_C.RGTP.ENABLE = False
# Foreground ratio r: K_fg = round(r * N) (Kinetics: the kept ratio; EPIC: fg_X means X = r * 400).
_C.RGTP.KEEP_RATIO = 1.0
# Foreground count K_fg; 0 = use KEEP_RATIO.
_C.RGTP.KEEP_TOKENS = 0
# Keep every round(1/ratio)-th foreground token in descending-score order (the "s05" of EPIC names).
_C.RGTP.FG_SAMPLE_RATIO = 1.0
# Keep every round(1/ratio)-th remaining token in raster order (the "bg_ZZZ" of EPIC names); 0 = none.
_C.RGTP.BG_SAMPLE_RATIO = 0.0
# Reset period F in tubelets (Kinetics 8, EPIC 4).
_C.RGTP.RESET_PERIOD = 8
# Grid pattern kept on reset tubelets: "1in2" (checkerboard) or "1in4".
_C.RGTP.RESET_PATTERN = "1in2"
# Process reset tubelets fully instead of with RESET_PATTERN (False for the paper's ViViT).
_C.RGTP.FULL_ON_RESET = False
# Process the first tubelet of every view fully.
_C.RGTP.FIRST_FRAME_FULL = True
# Head fusion of the rollout: rms (paper), mean or max.
_C.RGTP.HEAD_FUSION = "rms"
# Radius of the local tracking of the heatmap (1 = 3x3; 0 = off).
_C.RGTP.TRACKING_RADIUS = 1
# Token selection: "rollout" (the method) or "random" (baseline with the same K).
_C.RGTP.SELECTION = "rollout"
# Seed of the random baseline.
_C.RGTP.SEED = 0

# ---------------------------------------------------------------------------------------------------------------
_C.DATA = CfgNode()
# Dataset root; relative paths are resolved against $RGTP_DATASETS (default ./datasets).
_C.DATA.PATH_TO_DATA_DIR = "kinetics400"
# Annotation file per split, relative to the root; "{split}" is replaced by the split name (EPIC: "" picks
# EPIC_100_validation.csv / EPIC_100_train.csv).
_C.DATA.ANNOTATION_FILE = "annotations/{split}.csv"
# Folder of the videos, relative to the root ("{split}" is replaced).
_C.DATA.VIDEO_DIR = "{split}"
# Optional file with one class name per line (Kinetics); "" = sorted class names of the annotation file.
_C.DATA.CLASS_NAMES_FILE = ""
# Frames per view and temporal stride between them.
_C.DATA.NUM_FRAMES = 32
_C.DATA.SAMPLING_RATE = 2
# Resample decoded video to this frame rate (Kinetics 25); 0 = native rate (EPIC).
_C.DATA.TARGET_FPS = 25.0
# Resize so that the short side has this length before cropping.
_C.DATA.TEST_SHORT_SIDE = 224
# Square crop size of every view.
_C.DATA.TEST_CROP_SIZE = 224
# Per-channel normalisation on [0, 1] pixels.
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.STD = [0.225, 0.225, 0.225]
# Missing or corrupt videos: False = skip with a warning listing them; True = stop with an error.
_C.DATA.STRICT = False
# Tolerance (s) for an EPIC segment that stops after the end of its video.
_C.DATA.END_TOLERANCE = 0.5

_C.DATA_LOADER = CfgNode()
# Decoding worker processes per test/cache process.
_C.DATA_LOADER.NUM_WORKERS = 0

# ---------------------------------------------------------------------------------------------------------------
_C.TEST = CfgNode()
# Run the multi-view test.
_C.TEST.ENABLE = True
# Registered dataset name: Kinetics or Epickitchens.
_C.TEST.DATASET = "Kinetics"
# Split to test on.
_C.TEST.SPLIT = "val"
# Videos per forward pass (each contributes NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS batched views).
_C.TEST.BATCH_SIZE = 1
# Temporal views and spatial crops per video (4 x 3 = 12).
_C.TEST.NUM_ENSEMBLE_VIEWS = 4
_C.TEST.NUM_SPATIAL_CROPS = 3
# View ensembling: "mean_logits" (the paper) or "sum_softmax" (PySlowFast).
_C.TEST.ENSEMBLE_METHOD = "mean_logits"
# Weights to test (model_state in our naming, or an original TAdaConv checkpoint, converted on load).
_C.TEST.CHECKPOINT_FILE_PATH = ""
# Test at most this many videos (0 = all).
_C.TEST.MAX_VIDEOS = 0
# Results JSON, relative to OUTPUT_DIR.
_C.TEST.SAVE_RESULTS_PATH = "results.json"

# ---------------------------------------------------------------------------------------------------------------
_C.CACHE = CfgNode()
# Build the spatial-feature cache (pruned spatial model over CACHE.SPLITS) before training.
_C.CACHE.ENABLE = False
# Cache folder; "" = OUTPUT_DIR/spatial_cache.
_C.CACHE.DIR = ""
# Splits to cache.
_C.CACHE.SPLITS = ["train", "val"]
# Weights of the spatial model used for caching; "" = TRAIN.CHECKPOINT_FILE_PATH.
_C.CACHE.CHECKPOINT_FILE_PATH = ""
# Cache at most this many videos per split (0 = all).
_C.CACHE.MAX_VIDEOS = 0

# ---------------------------------------------------------------------------------------------------------------
_C.TRAIN = CfgNode()
# Fine-tune the temporal model and classifier on the spatial cache.
_C.TRAIN.ENABLE = False
# Dataset of the cache (for labels/keys) and the splits used.
_C.TRAIN.DATASET = "Kinetics"
_C.TRAIN.SPLIT = "train"
_C.TRAIN.VAL_SPLIT = "val"
# Videos per optimisation step (over all processes).
_C.TRAIN.BATCH_SIZE = 16
# Validate and save a checkpoint every this many epochs.
_C.TRAIN.EVAL_PERIOD = 1
_C.TRAIN.CHECKPOINT_PERIOD = 1
# Resume from the last checkpoint in OUTPUT_DIR/checkpoints.
_C.TRAIN.AUTO_RESUME = True
# Starting weights (the converted original checkpoint).
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# What TRAIN.ENABLE trains: "temporal" (the paper's fine-tune of the temporal model on the spatial cache) or "full"
# (every parameter, end to end on decoded clips with augmentation; rgtp_vivit.train_full, used by the embedded demo,
# which has no pretrained checkpoint).
_C.TRAIN.MODE = "temporal"
# TRAIN.MODE full: the short side of a training view is drawn from [DATA.TEST_CROP_SIZE, this] before a random crop.
_C.TRAIN.JITTER_SHORT_SIDE_MAX = 0
# TRAIN.MODE full: horizontal flips (p = 0.5) and time reversal (p = 0.5) of training views, each with the class
# pairs it swaps, as "name|name" strings ("moving left|moving right"); classes in no pair keep their label.
# Off unless enabled, since a flip or a reversal changes the meaning of direction-defined classes.
_C.TRAIN.HFLIP = False
_C.TRAIN.HFLIP_SWAP = []
_C.TRAIN.REVERSE = False
_C.TRAIN.REVERSE_SWAP = []

_C.SOLVER = CfgNode()
# AdamW, constant learning rate (method.md §8).
_C.SOLVER.OPTIMIZING_METHOD = "adamw"
_C.SOLVER.BASE_LR = 2e-6
_C.SOLVER.WEIGHT_DECAY = 0.05
_C.SOLVER.MAX_EPOCH = 10
_C.SOLVER.LR_POLICY = "constant"
# Linear warm-up (epochs) of SOLVER.LR_POLICY cosine (TRAIN.MODE full only).
_C.SOLVER.WARMUP_EPOCHS = 0.0

_ALLOWED = {
    "RGTP.HEAD_FUSION": ("rms", "mean", "max"),
    "RGTP.RESET_PATTERN": ("1in2", "1in4"),
    "RGTP.SELECTION": ("rollout", "random"),
    "TEST.ENSEMBLE_METHOD": ("mean_logits", "sum_softmax"),
    "SOLVER.OPTIMIZING_METHOD": ("adamw",),
    "SOLVER.LR_POLICY": ("constant", "cosine"),
    "TRAIN.MODE": ("temporal", "full"),
    "DIST_BACKEND": ("", "gloo", "nccl"),
}


def get_cfg() -> CfgNode:
    """A copy of the defaults."""
    return _C.clone()


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"invalid config {key}={value!r}: allowed {allowed}")


def _get(cfg: CfgNode, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def assert_and_infer_cfg(cfg: CfgNode) -> CfgNode:
    """Validate ``cfg``; an invalid setting raises :class:`ConfigError` naming the key, the value and what is
    allowed. Returns ``cfg``."""
    for key, allowed in _ALLOWED.items():
        if _get(cfg, key) not in allowed:
            _fail(key, _get(cfg, key), f"one of {allowed}")
    for key in ("NUM_GPUS", "NUM_SHARDS"):
        if int(_get(cfg, key)) < (0 if key == "NUM_GPUS" else 1):
            _fail(
                key,
                _get(cfg, key),
                "a non-negative integer" if key == "NUM_GPUS" else "an integer >= 1",
            )
    if not 0 <= cfg.SHARD_ID < cfg.NUM_SHARDS:
        _fail("SHARD_ID", cfg.SHARD_ID, f"an integer in [0, NUM_SHARDS={cfg.NUM_SHARDS})")
    for key in (
        "DATA.NUM_FRAMES",
        "DATA.SAMPLING_RATE",
        "DATA.TEST_CROP_SIZE",
        "DATA.TEST_SHORT_SIDE",
    ):
        if int(_get(cfg, key)) < 1:
            _fail(key, _get(cfg, key), "an integer >= 1")
    for key in (
        "TEST.BATCH_SIZE",
        "TEST.NUM_ENSEMBLE_VIEWS",
        "TEST.NUM_SPATIAL_CROPS",
        "TRAIN.BATCH_SIZE",
    ):
        if int(_get(cfg, key)) < 1:
            _fail(key, _get(cfg, key), "an integer >= 1")
    if cfg.MODEL.NUM_CLASSES < 1:
        _fail("MODEL.NUM_CLASSES", cfg.MODEL.NUM_CLASSES, "an integer >= 1")
    if cfg.MODEL.NUM_NOUN_CLASSES < 0:
        _fail("MODEL.NUM_NOUN_CLASSES", cfg.MODEL.NUM_NOUN_CLASSES, "an integer >= 0")
    if not 0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0:
        _fail("MODEL.DROPOUT_RATE", cfg.MODEL.DROPOUT_RATE, "a rate in [0, 1)")
    if cfg.DATA.TEST_SHORT_SIDE < cfg.DATA.TEST_CROP_SIZE:
        _fail(
            "DATA.TEST_SHORT_SIDE",
            cfg.DATA.TEST_SHORT_SIDE,
            f">= DATA.TEST_CROP_SIZE={cfg.DATA.TEST_CROP_SIZE}",
        )
    if cfg.DATA.TEST_CROP_SIZE % cfg.VIVIT.PATCH_SIZE:
        _fail(
            "DATA.TEST_CROP_SIZE",
            cfg.DATA.TEST_CROP_SIZE,
            f"a multiple of VIVIT.PATCH_SIZE={cfg.VIVIT.PATCH_SIZE}",
        )
    if cfg.DATA.NUM_FRAMES % cfg.VIVIT.TUBELET_SIZE:
        _fail(
            "DATA.NUM_FRAMES",
            cfg.DATA.NUM_FRAMES,
            f"a multiple of VIVIT.TUBELET_SIZE={cfg.VIVIT.TUBELET_SIZE}",
        )
    if cfg.VIVIT.EMBED_DIM % cfg.VIVIT.NUM_HEADS:
        _fail(
            "VIVIT.EMBED_DIM",
            cfg.VIVIT.EMBED_DIM,
            f"a multiple of VIVIT.NUM_HEADS={cfg.VIVIT.NUM_HEADS}",
        )
    if cfg.DATA.TARGET_FPS < 0:
        _fail("DATA.TARGET_FPS", cfg.DATA.TARGET_FPS, "a frame rate >= 0 (0 = native)")
    if len(cfg.DATA.MEAN) != 3 or len(cfg.DATA.STD) != 3 or min(cfg.DATA.STD) <= 0:
        _fail("DATA.MEAN/DATA.STD", (cfg.DATA.MEAN, cfg.DATA.STD), "three values each, STD > 0")
    if cfg.SOLVER.BASE_LR <= 0:
        _fail("SOLVER.BASE_LR", cfg.SOLVER.BASE_LR, "a learning rate > 0")
    if cfg.SOLVER.LR_POLICY == "cosine" and cfg.TRAIN.MODE != "full":
        _fail("SOLVER.LR_POLICY", cfg.SOLVER.LR_POLICY, "'constant' unless TRAIN.MODE is 'full'")
    if cfg.SOLVER.MAX_EPOCH < 1:
        _fail("SOLVER.MAX_EPOCH", cfg.SOLVER.MAX_EPOCH, "an integer >= 1")
    if cfg.RGTP.KEEP_TOKENS < 0:
        _fail("RGTP.KEEP_TOKENS", cfg.RGTP.KEEP_TOKENS, "an integer >= 0 (0 = use RGTP.KEEP_RATIO)")
    from .build import DATASET_REGISTRY, MODEL_REGISTRY

    if cfg.MODEL.MODEL_NAME not in MODEL_REGISTRY:
        _fail(
            "MODEL.MODEL_NAME",
            cfg.MODEL.MODEL_NAME,
            f"one of {sorted(k for k, _ in MODEL_REGISTRY)}",
        )
    for key in ("TEST.DATASET", "TRAIN.DATASET"):
        if _get(cfg, key) not in DATASET_REGISTRY:
            _fail(key, _get(cfg, key), f"one of {sorted(k for k, _ in DATASET_REGISTRY)}")
    try:
        to_rgtp_config(cfg).validate(
            num_tokens=(cfg.DATA.TEST_CROP_SIZE // cfg.VIVIT.PATCH_SIZE) ** 2
        )
    except ConfigError as e:
        raise ConfigError(f"{e} (from the RGTP.* section)") from None
    return cfg


def to_rgtp_config(cfg: CfgNode) -> RGTPConfig:
    """Translate the ``RGTP`` section into the core :class:`rgtp.config.RGTPConfig`."""
    r = cfg.RGTP
    keep_tokens: Optional[int] = int(r.KEEP_TOKENS) if r.KEEP_TOKENS > 0 else None
    return RGTPConfig(
        enabled=bool(r.ENABLE),
        keep_tokens=keep_tokens,
        keep_ratio=None if keep_tokens is not None else float(r.KEEP_RATIO),
        fg_sample_ratio=float(r.FG_SAMPLE_RATIO),
        bg_sample_ratio=float(r.BG_SAMPLE_RATIO),
        reset_period=int(r.RESET_PERIOD),
        full_on_reset=bool(r.FULL_ON_RESET),
        reset_pattern=str(r.RESET_PATTERN) if r.RESET_PATTERN else None,
        first_frame_full=bool(r.FIRST_FRAME_FULL),
        rollout_blocks=None,
        head_fusion=str(r.HEAD_FUSION),
        tracking_radius=int(r.TRACKING_RADIUS),
        selection=str(r.SELECTION),
        seed=int(r.SEED),
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of ``tools/vivit_net.py`` (PySlowFast style)."""
    parser = argparse.ArgumentParser(
        description="RGTP ViViT recogniser: test, spatial cache and fine-tune."
    )
    parser.add_argument(
        "--cfg", dest="cfg_files", nargs="+", default=[], help="config file(s), merged in order"
    )
    parser.add_argument("--shard_id", type=int, default=0, help="index of this machine")
    parser.add_argument("--num_shards", type=int, default=1, help="number of machines")
    parser.add_argument(
        "--init_method",
        default="",
        help="torch.distributed init method, e.g. tcp://host:port ('' = a free port)",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=None, help="KEY VALUE pairs overriding the config"
    )
    args = parser.parse_args(argv)
    # "--cfg a.yaml KEY VALUE": argparse gives the KEY VALUE pairs to --cfg; move them to opts
    files = list(args.cfg_files)
    cut = next((i for i, f in enumerate(files) if not f.endswith((".yaml", ".yml"))), len(files))
    args.cfg_files, args.opts = files[:cut], files[cut:] + list(args.opts or [])
    return args


def load_config(args: argparse.Namespace, path_to_config: Optional[str] = None) -> CfgNode:
    """Defaults, then every ``--cfg`` file (or ``path_to_config``), then the ``KEY VALUE`` pairs; validated."""
    cfg = get_cfg()
    files: List[str] = (
        [path_to_config] if path_to_config else list(getattr(args, "cfg_files", []) or [])
    )
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"config file not found: {f}")
        with warnings.catch_warnings():
            # yacs literal_eval()s string values such as "1in2", which warns on Python >= 3.12
            warnings.simplefilter("ignore", SyntaxWarning)
            cfg.merge_from_file(f)
    opts = getattr(args, "opts", None) or []
    if len(opts) % 2:
        raise ConfigError(
            f"trailing config overrides must be KEY VALUE pairs, got an odd list: {opts}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"bad config override: {e}") from None
    if getattr(args, "num_shards", None) is not None and "NUM_SHARDS" not in opts[::2]:
        cfg.NUM_SHARDS = args.num_shards
    if getattr(args, "shard_id", None) is not None and "SHARD_ID" not in opts[::2]:
        cfg.SHARD_ID = args.shard_id
    return assert_and_infer_cfg(cfg)


def dataset_root(path: str) -> str:
    """Resolve a data path: absolute as is, else under $RGTP_DATASETS (default ./datasets)."""
    if os.path.isabs(path):
        return path
    return os.path.join(os.environ.get("RGTP_DATASETS", "datasets"), path)
