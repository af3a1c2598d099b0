"""Config defaults, loading (files + KEY VALUE pairs, _BASE_) and validation with clear errors."""

from __future__ import annotations

import argparse

import pytest
from rgtp_vivit.config import dataset_root, get_cfg, load_config, parse_args, to_rgtp_config
from vivit_helpers import REPO, cfg_from

from rgtp.config import ConfigError


def test_defaults_have_the_pyslowfast_sections():
    cfg = get_cfg()
    for key in (
        "MODEL",
        "VIVIT",
        "RGTP",
        "DATA",
        "TEST",
        "TRAIN",
        "SOLVER",
        "NUM_GPUS",
        "NUM_SHARDS",
        "OUTPUT_DIR",
    ):
        assert key in cfg


def test_files_and_overrides_merge():
    args = parse_args(
        [
            "--cfg",
            "configs/epic/fg_28s05_bg_00.yaml",
            "RGTP.BG_SAMPLE_RATIO",
            "0.1",
            "NUM_GPUS",
            "2",
        ]
    )
    assert args.cfg_files == ["configs/epic/fg_28s05_bg_00.yaml"]
    cfg = load_config(args)
    assert cfg.MODEL.NUM_CLASSES == 97  # from _BASE_
    assert (
        cfg.RGTP.KEEP_RATIO == 0.14
        and cfg.RGTP.RESET_PATTERN == "1in4"
        and cfg.RGTP.BG_SAMPLE_RATIO == 0.1
    )
    assert cfg.NUM_GPUS == 2
    r = to_rgtp_config(cfg)
    assert (r.keep_ratio, r.fg_sample_ratio, r.reset_period, r.full_on_reset) == (
        0.14,
        0.5,
        4,
        False,
    )


@pytest.mark.parametrize(
    "opts, message",
    [
        (["RGTP.HEAD_FUSION", "median"], "RGTP.HEAD_FUSION='median'"),
        (["TEST.ENSEMBLE_METHOD", "vote"], "TEST.ENSEMBLE_METHOD='vote'"),
        (["DATA.TEST_CROP_SIZE", "100"], "DATA.TEST_CROP_SIZE=100"),
        (["RGTP.KEEP_RATIO", "1.5"], "RGTP.KEEP_RATIO=1.5: allowed a ratio in (0, 1]"),
        (["RGTP.KEEP_TOKENS", "-1"], "RGTP.KEEP_TOKENS=-1: allowed an integer >= 1, or 0 = use"),
        (["RGTP.RESET_PATTERN", "1in3"], "RGTP.RESET_PATTERN='1in3'"),
        (["TEST.DATASET", "UCF101"], "TEST.DATASET='UCF101'"),
        (["NO.SUCH_KEY", "1"], "NO.SUCH_KEY"),
        (["RGTP.ENABLE"], "KEY VALUE pairs"),
    ],
)
def test_invalid_settings_name_the_key(opts, message):
    with pytest.raises(
        (ConfigError, KeyError), match=message.replace("(", r"\(").replace(".", r"\.")
    ):
        cfg_from(["configs/kinetics/keep_049.yaml"], opts)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(argparse.Namespace(cfg_files=["nope.yaml"], opts=[]))


def test_dataset_root_uses_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RGTP_DATASETS", str(tmp_path))
    assert dataset_root("kinetics400") == str(tmp_path / "kinetics400")
    monkeypatch.delenv("RGTP_DATASETS")
    assert dataset_root("kinetics400") == "datasets/kinetics400"
    assert dataset_root(str(REPO)) == str(REPO)


def test_the_recogniser_never_imports_detectron2():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['detectron2'] = None\n"
        "import rgtp_vivit, rgtp_vivit.test_net, rgtp_vivit.train_net, rgtp_vivit.cache, rgtp_vivit.flops\n"
        "import rgtp_vivit.convert\n"
        "assert not any(m.startswith('detectron2.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    for tool in (
        "tools/vivit_net.py",
        "tools/convert_vivit_checkpoint.py",
    ):  # the tools, run as scripts
        done = subprocess.run(
            [sys.executable, "-X", "importtime", tool, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
        assert "rgtp_vivit" in imported and not any(m.startswith("detectron2") for m in imported)


# ------------------------------------------------------------------------------------------ RGTP.BEHAVIOUR
@pytest.mark.parametrize(
    "config,expected",
    [
        ("configs/kinetics/keep_049.yaml", ("official", "high", "official")),
        ("configs/kinetics/base.yaml", ("official", "high", "official")),
        ("configs/epic/fg_160s05_bg_009.yaml", ("official", "high", "official")),
        ("configs/demo/kin_keep14.yaml", ("clean", "low", "exclude")),
    ],
)
def test_paper_configs_are_official_demo_configs_clean(config, expected):
    r = to_rgtp_config(cfg_from([config], []))
    assert (r.behaviour, r.tie_break, r.tracking_border) == expected


def test_defaults_are_clean_and_every_quirk_follows_the_preset():
    cfg = get_cfg()
    assert (cfg.RGTP.BEHAVIOUR, cfg.RGTP.TIE_BREAK, cfg.RGTP.TRACKING_BORDER) == ("clean", "", "")
    r = to_rgtp_config(cfg)
    assert (r.tie_break, r.tracking_border) == ("low", "exclude")
    cfg.RGTP.BEHAVIOUR = "official"
    r = to_rgtp_config(cfg)
    assert (r.tie_break, r.tracking_border) == ("high", "official")


@pytest.mark.parametrize(
    "behaviour,opts,expected",
    [
        ("official", ["RGTP.TIE_BREAK", "low"], ("low", "official")),
        ("official", ["RGTP.TRACKING_BORDER", "exclude"], ("high", "exclude")),
        ("clean", ["RGTP.TIE_BREAK", "high"], ("high", "exclude")),
        ("clean", ["RGTP.TRACKING_BORDER", "official"], ("low", "official")),
    ],
)
def test_one_quirk_at_a_time_overrides_the_preset(behaviour, opts, expected):
    cfg = cfg_from(["configs/kinetics/keep_049.yaml"], ["RGTP.BEHAVIOUR", behaviour, *opts])
    r = to_rgtp_config(cfg)
    assert (r.behaviour, r.tie_break, r.tracking_border) == (behaviour,) + expected


@pytest.mark.parametrize(
    "key,value", [("BEHAVIOUR", "paper"), ("TIE_BREAK", "first"), ("TRACKING_BORDER", "zero")]
)
def test_bad_quirk_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"RGTP\.{key}='{value}': allowed one of \("):
        cfg_from(["configs/kinetics/keep_049.yaml"], [f"RGTP.{key}", value])
