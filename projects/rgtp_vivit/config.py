"""fvcore ``CfgNode`` defaults of the ViViT recogniser (PySlowFast style), config loading and validation.

Sections: ``MODEL``, ``VIVIT``, ``RGTP``, ``DATA``, ``DATA_LOADER``, ``TEST``, ``TRAIN``, ``CACHE``, ``SOLVER``,
plus ``NUM_GPUS``, ``NUM_SHARDS``, ``SHARD_ID``, ``OUTPUT_DIR`` and ``RNG_SEED``. ``load_config(args)`` merges the
``--cfg`` files (``_BASE_`` inheritance) and the trailing ``KEY VALUE`` pairs, then validates.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import List, Optional, Sequence

from fvcore.common.config import CfgNode

from rgtp import config_table as table
from rgtp.config import ConfigError, RGTPConfig
from rgtp.config_table import BOOL, FLOAT, INT, STR, Key, integer, number, one_of
from rgtp.fileio import dataset_path

_C = CfgNode()

# Number of processes per machine (one per GPU; on a machine without CUDA, NUM_GPUS CPU processes using gloo).
_C.NUM_GPUS = 1
# Number of machines.
_C.NUM_SHARDS = 1
# Index of this machine.
_C.SHARD_ID = 0
# Where logs, results, caches and checkpoints go (relative paths are relative to the working directory).
_C.OUTPUT_DIR = "./output/vivit"
# Seed of the fine-tune (docs/method.md §8: 42).
_C.RNG_SEED = 42
# Distributed backend: "" picks nccl with CUDA, gloo otherwise.
_C.DIST_BACKEND = ""

# ---------------------------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# Registered model name (MODEL_REGISTRY).
_C.MODEL.MODEL_NAME = "ViViT"
# Classes of the main (verb for EPIC) classifier.
_C.MODEL.NUM_CLASSES = 400
# The model's class names in the order of its outputs (Kinetics): they fix the label index of every class, whatever
# classes an annotation file holds. [] = DATA.CLASS_NAMES_FILE, else the sorted class names of the annotation file
# when they are exactly MODEL.NUM_CLASSES (any other count is an error naming both numbers).
_C.MODEL.CLASS_NAMES = []
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
# Foreground count K_fg; 0 = use KEEP_RATIO (the same in MODEL.RGTP.KEEP_TOKENS of the detector).
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
# Token selection: "rollout" (the method), "random" (baseline with the same K) or "change" (Eventful-style baseline:
# the K tokens whose patch embedding changed most since they were last computed; docs/method.md).
_C.RGTP.SELECTION = "rollout"
# Seed of the random baseline.
_C.RGTP.SEED = 0
# The preset of the official code's quirks (docs/method.md §10.2, §11): "clean" (this project's rules) or
# "official" (the official code's, to reproduce the published numbers exactly). Each quirk key below left at ""
# takes its value from this preset; an explicit value overrides it, one quirk at a time.
_C.RGTP.BEHAVIOUR = "clean"
# Order among exactly tied importance scores at rank K: "low" (lower index first; clean), "high" (higher index
# first; official), "" = from RGTP.BEHAVIOUR. RGTPConfig.tie_break.
_C.RGTP.TIE_BREAK = ""
# Out-of-grid candidates of the tracking warp: "exclude" (never win; clean), "official" (similarity -100 and
# source token 0; official), "" = from RGTP.BEHAVIOUR. RGTPConfig.tracking_border.
_C.RGTP.TRACKING_BORDER = ""
# Reset at shot cuts: a pruned tubelet whose match quality against the previous one (mean cosine similarity of
# each token's best tracking match) is below this value becomes a reset tubelet (cause "cut"); -1.0 = off
# (periodic resets only; the paper's configs). Otherwise a cosine similarity in (-1, 1]. RGTPConfig.cut_threshold.
_C.RGTP.CUT_THRESHOLD = -1.0

# ---------------------------------------------------------------------------------------------------------------
_C.DATA = CfgNode()
# Dataset root; relative paths are resolved against $RGTP_DATASETS (default ./datasets).
_C.DATA.PATH_TO_DATA_DIR = "kinetics400"
# Annotation file per split, relative to the root; "{split}" is replaced by the split name (EPIC: "" picks
# EPIC_100_validation.csv / EPIC_100_train.csv).
_C.DATA.ANNOTATION_FILE = "annotations/{split}.csv"
# Folder of the videos, relative to the root ("{split}" is replaced).
_C.DATA.VIDEO_DIR = "{split}"
# Optional file with one class name per line (Kinetics), relative to the data root, used when MODEL.CLASS_NAMES is
# empty; "" = the sorted class names of the annotation file (only when they are exactly MODEL.NUM_CLASSES).
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
# The optimiser is AdamW (docs/method.md §8); SOLVER.LR_POLICY constant (the paper) or cosine (TRAIN.MODE full).
_C.SOLVER.BASE_LR = 2e-6
_C.SOLVER.WEIGHT_DECAY = 0.05
_C.SOLVER.MAX_EPOCH = 10
_C.SOLVER.LR_POLICY = "constant"
# Linear warm-up (epochs) of SOLVER.LR_POLICY cosine (TRAIN.MODE full only).
_C.SOLVER.WARMUP_EPOCHS = 0.0

#: The keys of the core settings: RGTPConfig field -> its key in ``RGTP`` (read by
#: :func:`rgtp.config_table.from_table`; the core checks the values). A key's ``none`` value stands for the field's
#: None: KEEP_TOKENS 0 = use KEEP_RATIO, RESET_PATTERN "" = none, CUT_THRESHOLD -1 = off, a quirk "" = from
#: BEHAVIOUR. The settings both projects have read the same as ``MODEL.RGTP.*`` of the detector.
RGTP_KEYS = {
    "enabled": Key("ENABLE", BOOL),
    "keep_tokens": Key("KEEP_TOKENS", INT, none=0, none_means="use keep_ratio"),
    "keep_ratio": Key("KEEP_RATIO", FLOAT, unless="keep_tokens"),
    "fg_sample_ratio": Key("FG_SAMPLE_RATIO", FLOAT),
    "bg_sample_ratio": Key("BG_SAMPLE_RATIO", FLOAT),
    "reset_period": Key("RESET_PERIOD", INT),
    "reset_pattern": Key("RESET_PATTERN", STR, none=""),
    "full_on_reset": Key("FULL_ON_RESET", BOOL),
    "first_frame_full": Key("FIRST_FRAME_FULL", BOOL),
    "head_fusion": Key("HEAD_FUSION", STR),
    "tracking_radius": Key("TRACKING_RADIUS", INT),
    "selection": Key("SELECTION", STR),
    "seed": Key("SEED", INT),
    "cut_threshold": Key("CUT_THRESHOLD", FLOAT, none=-1.0, none_means="off"),
    "behaviour": Key("BEHAVIOUR", STR),
    "tie_break": Key("TIE_BREAK", STR, none=""),
    "tracking_border": Key("TRACKING_BORDER", STR, none=""),
}
PREFIX = "RGTP"

#: The project's own keys, each with what it allows.
PROJECT_RULES = {
    "TEST.ENSEMBLE_METHOD": one_of("mean_logits", "sum_softmax"),
    "SOLVER.LR_POLICY": one_of("constant", "cosine"),
    "TRAIN.MODE": one_of("temporal", "full"),
    "DIST_BACKEND": one_of("", "gloo", "nccl"),
    "NUM_GPUS": integer(0),
    "NUM_SHARDS": integer(1),
    **{
        k: integer(1)
        for k in (
            "DATA.NUM_FRAMES",
            "DATA.SAMPLING_RATE",
            "DATA.TEST_CROP_SIZE",
            "DATA.TEST_SHORT_SIDE",
            "TEST.BATCH_SIZE",
            "TEST.NUM_ENSEMBLE_VIEWS",
            "TEST.NUM_SPATIAL_CROPS",
            "TRAIN.BATCH_SIZE",
            "MODEL.NUM_CLASSES",
            "SOLVER.MAX_EPOCH",
            "VIVIT.PATCH_SIZE",
            "VIVIT.TUBELET_SIZE",
            "VIVIT.NUM_HEADS",
        )
    },
    "MODEL.NUM_NOUN_CLASSES": integer(0),
    "MODEL.DROPOUT_RATE": number(0.0, 1.0, "[)"),
    "DATA.TARGET_FPS": number(0.0, 1000.0),
}


def get_cfg() -> CfgNode:
    """A copy of the defaults."""
    return _C.clone()


def assert_and_infer_cfg(cfg: CfgNode) -> CfgNode:
    """Validate ``cfg``: the project's own keys here, the core settings through :func:`to_rgtp_config`; an invalid
    setting raises :class:`ConfigError` naming the key, the value and what is allowed. Returns ``cfg``.
    """
    table.check_keys(cfg, PROJECT_RULES)
    fail = table.config_error
    if not 0 <= cfg.SHARD_ID < cfg.NUM_SHARDS:
        raise fail("SHARD_ID", cfg.SHARD_ID, f"an integer in [0, NUM_SHARDS={cfg.NUM_SHARDS})")
    d, v = cfg.DATA, cfg.VIVIT
    if d.TEST_SHORT_SIDE < d.TEST_CROP_SIZE:
        raise fail(
            "DATA.TEST_SHORT_SIDE", d.TEST_SHORT_SIDE, f">= DATA.TEST_CROP_SIZE={d.TEST_CROP_SIZE}"
        )
    for key, value, unit in (
        ("DATA.TEST_CROP_SIZE", d.TEST_CROP_SIZE, "VIVIT.PATCH_SIZE"),
        ("DATA.NUM_FRAMES", d.NUM_FRAMES, "VIVIT.TUBELET_SIZE"),
        ("VIVIT.EMBED_DIM", v.EMBED_DIM, "VIVIT.NUM_HEADS"),
    ):
        if value % table.lookup(cfg, unit):
            raise fail(key, value, f"a multiple of {unit}={table.lookup(cfg, unit)}")
    if len(d.MEAN) != 3 or len(d.STD) != 3 or min(d.STD) <= 0:
        raise fail("DATA.MEAN/DATA.STD", (d.MEAN, d.STD), "three values each, STD > 0")
    if cfg.SOLVER.BASE_LR <= 0:
        raise fail("SOLVER.BASE_LR", cfg.SOLVER.BASE_LR, "a learning rate > 0")
    if cfg.SOLVER.LR_POLICY == "cosine" and cfg.TRAIN.MODE != "full":
        raise fail(
            "SOLVER.LR_POLICY", cfg.SOLVER.LR_POLICY, "'constant' unless TRAIN.MODE is 'full'"
        )
    from .build import DATASET_REGISTRY, MODEL_REGISTRY

    if cfg.MODEL.MODEL_NAME not in MODEL_REGISTRY:
        names = sorted(k for k, _ in MODEL_REGISTRY)
        raise fail("MODEL.MODEL_NAME", cfg.MODEL.MODEL_NAME, f"one of {names}")
    for key in ("TEST.DATASET", "TRAIN.DATASET"):
        if table.lookup(cfg, key) not in DATASET_REGISTRY:
            names = sorted(k for k, _ in DATASET_REGISTRY)
            raise fail(key, table.lookup(cfg, key), f"one of {names}")
    to_rgtp_config(cfg, check_grid=True)
    return cfg


def to_rgtp_config(cfg: CfgNode, check_grid: bool = False) -> RGTPConfig:
    """Translate the ``RGTP`` section into the core :class:`rgtp.config.RGTPConfig` (:data:`RGTP_KEYS`); with
    ``check_grid`` the kept count is also checked against the token grid of ``DATA.TEST_CROP_SIZE``.
    """
    n = (cfg.DATA.TEST_CROP_SIZE // cfg.VIVIT.PATCH_SIZE) ** 2 if check_grid else None
    return table.from_table(cfg.RGTP, RGTP_KEYS, PREFIX, num_tokens=n)


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
    resolve_checkpoint_paths(cfg, files[-1] if files else "")
    if getattr(args, "num_shards", None) is not None and "NUM_SHARDS" not in opts[::2]:
        cfg.NUM_SHARDS = args.num_shards
    if getattr(args, "shard_id", None) is not None and "SHARD_ID" not in opts[::2]:
        cfg.SHARD_ID = args.shard_id
    return assert_and_infer_cfg(cfg)


CHECKPOINT_KEYS = (
    "TEST.CHECKPOINT_FILE_PATH",
    "TRAIN.CHECKPOINT_FILE_PATH",
    "CACHE.CHECKPOINT_FILE_PATH",
)


def resolve_checkpoint_paths(cfg: CfgNode, config_file: str = "") -> None:
    """Relative checkpoint paths of ``cfg`` resolved against the working directory, else the repository root
    (so that the committed configs work from any folder); paths found nowhere are left as they are.
    """
    from rgtp.cli import resolve_config_path

    for key in CHECKPOINT_KEYS:
        section, name = key.split(".")
        value = cfg[section][name]
        if value:
            cfg[section][name] = resolve_config_path(value, key, config_file, must_exist=False)


def dataset_root(path: str) -> str:
    """Resolve a data path: absolute as is, else under $RGTP_DATASETS (default ./datasets)
    (:func:`rgtp.fileio.dataset_path`)."""
    return dataset_path(path)
