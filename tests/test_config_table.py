"""rgtp.config_table: the one path from a framework config to RGTPConfig behind both projects, and one error style
(``invalid config <KEY>=<value>: allowed <what>``) for every key of either project."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rgtp import config_table
from rgtp.config import ConfigError, RGTPConfig
from rgtp.config_table import BOOL, FLOAT, INT, INTS, STR, Key, from_table

REPO = Path(__file__).resolve().parents[1]

TABLE = {
    "enabled": Key("ON", BOOL),
    "keep_tokens": Key("K", INT, none=0, none_means="use keep_ratio"),
    "keep_ratio": Key("RATIO", FLOAT, unless="keep_tokens"),
    "rollout_blocks": Key("BLOCKS", INTS, none=[]),
    "tie_break": Key("TIES", STR, none=""),
    "cut_threshold": Key("CUT", FLOAT, none=-1.0, none_means="off"),
}
SECTION = {"ON": True, "K": 0, "RATIO": 0.5, "BLOCKS": [], "TIES": "", "CUT": -1.0}


def _read(**changes):
    return from_table({**SECTION, **changes}, TABLE, "S.RGTP")


# ------------------------------------------------------------------------------------------ the core function
def test_the_none_values_stand_for_none_and_the_rest_converts():
    r = _read()
    assert (r.keep_tokens, r.keep_ratio, r.rollout_blocks, r.cut_threshold) == (
        None,
        0.5,
        None,
        None,
    )
    assert r.tie_break == "low"  # "" = from the preset
    r = _read(K=7, BLOCKS=[1, 3], TIES="high", CUT=0.25)
    assert (r.keep_tokens, r.keep_ratio, r.rollout_blocks, r.tie_break, r.cut_threshold) == (
        7,
        None,  # the ratio is unused when the count is set
        (1, 3),
        "high",
        0.25,
    )
    assert r == RGTPConfig(
        keep_tokens=7, rollout_blocks=(1, 3), tie_break="high", cut_threshold=0.25
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            dict(K=-1),
            "invalid config S.RGTP.K=-1: allowed an integer >= 1, or 0 = use S.RGTP.RATIO",
        ),
        (dict(RATIO=1.5), "invalid config S.RGTP.RATIO=1.5: allowed a ratio in (0, 1]"),
        # an unused ratio is still checked
        (dict(K=3, RATIO=0.0), "invalid config S.RGTP.RATIO=0.0: allowed a ratio in (0, 1]"),
        (
            dict(TIES="first"),
            "invalid config S.RGTP.TIES='first': allowed one of ('low', 'high') ('' = from behaviour)",
        ),
        (
            dict(CUT=2.0),
            "invalid config S.RGTP.CUT=2.0: allowed a cosine similarity in (-1, 1] (-1.0 = off)",
        ),
        (dict(ON=1), "invalid config S.RGTP.ON=1: allowed True or False"),
        (
            dict(K="many"),
            "invalid config S.RGTP.K='many': allowed an integer, or 0 = use S.RGTP.RATIO",
        ),
    ],
)
def test_core_errors_are_re_raised_under_the_key(changes, message):
    with pytest.raises(ConfigError) as e:
        _read(**changes)
    assert str(e.value) == message
    assert e.value.key == message.split()[2].split("=")[0]


def test_the_grid_check_names_the_key_that_set_k():
    with pytest.raises(
        ConfigError, match=r"^invalid config S\.RGTP\.K=80: allowed an integer in \[1, N=64\]"
    ):
        from_table({**SECTION, "K": 80}, TABLE, "S.RGTP", num_tokens=64)
    with pytest.raises(ConfigError, match=r"^invalid config S\.RGTP\.RATIO=0\.001: .*N=64"):
        from_table({**SECTION, "RATIO": 0.001}, TABLE, "S.RGTP", num_tokens=64)


def test_a_field_without_a_key_says_so():
    with pytest.raises(
        ConfigError, match=r"reset_pattern=None.*S\.RGTP has no key for RGTPConfig\.reset_pattern"
    ):
        from_table({"F": False}, {"full_on_reset": Key("F", BOOL)}, "S.RGTP")


def test_project_rules_have_the_same_style():
    cfg = {"A": {"MODE": "x", "N": 0, "P": 1.0, "B": "yes"}}
    rules = {
        "A.MODE": config_table.one_of("x", "y"),
        "A.N": config_table.integer(0),
        "A.P": config_table.number(0.0, 1.0, "[)"),
    }
    with pytest.raises(
        ConfigError, match=r"^invalid config A\.P=1\.0: allowed a number in \[0, 1\)$"
    ):
        config_table.check_keys(cfg, rules)
    with pytest.raises(ConfigError, match=r"^invalid config A\.B='yes': allowed True or False$"):
        config_table.check_keys(cfg, {"A.B": config_table.boolean()})


# ------------------------------------------------------------------------------------------ both projects
@pytest.fixture(scope="module")
def projects():
    pytest.importorskip("detectron2")
    pytest.importorskip("fvcore")
    import rgtp_vitdet.config as det
    import rgtp_vivit.config as rec

    return det, rec


def _det_cfg(det, opts=()):
    return det.load_config(str(REPO / "configs/vid/keep512.yaml"), list(opts))


def _rec_cfg(rec, opts=()):
    ns = argparse.Namespace(
        cfg_files=[str(REPO / "configs/kinetics/keep_049.yaml")], opts=list(opts)
    )
    return rec.load_config(ns)


def test_both_projects_translate_through_the_same_function(projects, monkeypatch):
    det, rec = projects
    calls = []
    real = config_table.from_table

    def spy(section, table, prefix, num_tokens=None):
        calls.append((prefix, table))
        return real(section, table, prefix, num_tokens)

    monkeypatch.setattr(config_table, "from_table", spy)
    det.rgtp_config_from_cfg(_det_cfg(det))
    rec.to_rgtp_config(_rec_cfg(rec))
    assert ("MODEL.RGTP", det.RGTP_KEYS) in calls and ("RGTP", rec.RGTP_KEYS) in calls


def test_a_setting_has_one_meaning_in_both_projects(projects):
    det, rec = projects
    assert config_table.shared_meaning([det.RGTP_KEYS, rec.RGTP_KEYS]) == {}
    shared = set(det.RGTP_KEYS) & set(rec.RGTP_KEYS)
    assert {"keep_tokens", "keep_ratio", "cut_threshold", "tie_break"} <= shared
    # the names follow each framework: detectron2 ENABLED, PySlowFast ENABLE; all others are the same
    renamed = {f for f in shared if det.RGTP_KEYS[f].name != rec.RGTP_KEYS[f].name}
    assert renamed == {"enabled"}


@pytest.mark.parametrize("value, expected", [(0, None), (50, 50)])
def test_keep_tokens_zero_means_use_the_ratio_in_both(projects, value, expected):
    det, rec = projects
    d = det.rgtp_config_from_cfg(_det_cfg(det, ["MODEL.RGTP.KEEP_TOKENS", str(value)]))
    r = rec.to_rgtp_config(_rec_cfg(rec, ["RGTP.KEEP_TOKENS", str(value)]))
    assert d.keep_tokens == r.keep_tokens == expected
    assert (d.keep_ratio, r.keep_ratio) == ((0.29, 0.49) if value == 0 else (None, None))


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("KEEP_TOKENS", "-1", "an integer >= 1, or 0 = use {p}.KEEP_RATIO"),
        ("KEEP_TOKENS", "100000", "an integer in [1, N={n}], or 0 = use {p}.KEEP_RATIO"),
        ("KEEP_RATIO", "1.5", "a ratio in (0, 1]"),
        ("HEAD_FUSION", "'median'", "one of ('rms', 'mean', 'max')"),
        ("SELECTION", "'eventful'", "one of ('rollout', 'random', 'change')"),
        ("CUT_THRESHOLD", "1.5", "a cosine similarity in (-1, 1] (-1.0 = off)"),
        ("TIE_BREAK", "'first'", "one of ('low', 'high') ('' = from {p}.BEHAVIOUR)"),
        ("RESET_PERIOD", "0", "an integer >= 1"),
    ],
)
def test_a_config_error_names_the_project_key_the_value_and_what_is_allowed(
    projects, key, value, allowed
):
    det, rec = projects
    for prefix, n, load in (
        ("MODEL.RGTP", 1764, lambda o: _det_cfg(det, o)),
        ("RGTP", 196, lambda o: _rec_cfg(rec, o)),
    ):
        raw = value.strip("'")
        with pytest.raises(ConfigError) as e:
            load([f"{prefix}.{key}", raw])
        assert str(e.value) == (
            f"invalid config {prefix}.{key}={value}: allowed " + allowed.format(p=prefix, n=n)
        )


def test_project_only_keys_use_the_same_style(projects):
    det, rec = projects
    with pytest.raises(
        ConfigError, match=r"^invalid config MODEL\.RGTP\.ANCHOR_SCORE_THRESH=1\.0: allowed"
    ):
        _det_cfg(det, ["MODEL.RGTP.ANCHOR_SCORE_THRESH", "1.0"])
    with pytest.raises(
        ConfigError, match=r"^invalid config MODEL\.VIT\.ATTENTION='fast': allowed one of \("
    ):
        _det_cfg(det, ["MODEL.VIT.ATTENTION", "fast"])
    with pytest.raises(
        ConfigError, match=r"^invalid config TEST\.ENSEMBLE_METHOD='vote': allowed one of \("
    ):
        _rec_cfg(rec, ["TEST.ENSEMBLE_METHOD", "vote"])


def test_dead_keys_are_gone(projects):
    det, rec = projects
    assert "OPTIMIZING_METHOD" not in rec.get_cfg().SOLVER
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZING_METHOD"):
        _rec_cfg(rec, ["SOLVER.OPTIMIZING_METHOD", "adamw"])
