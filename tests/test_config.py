"""RGTPConfig: the behaviour preset and its quirk fields (docs/method.md §10.2), and their errors."""

import dataclasses

import pytest

from rgtp.config import BEHAVIOUR_PRESETS, ConfigError, RGTPConfig


def test_presets_set_the_quirk_fields():
    clean = RGTPConfig()
    assert (clean.behaviour, clean.tie_break, clean.tracking_border) == ("clean", "low", "exclude")
    official = RGTPConfig(behaviour="official")
    assert (official.tie_break, official.tracking_border) == ("high", "official")
    assert set(BEHAVIOUR_PRESETS["clean"]) == set(BEHAVIOUR_PRESETS["official"])


@pytest.mark.parametrize(
    "behaviour,field,value,other,other_value",
    [
        ("official", "tie_break", "low", "tracking_border", "official"),
        ("official", "tracking_border", "exclude", "tie_break", "high"),
        ("clean", "tie_break", "high", "tracking_border", "exclude"),
        ("clean", "tracking_border", "official", "tie_break", "low"),
    ],
)
def test_an_explicit_field_wins_over_the_preset_one_at_a_time(
    behaviour, field, value, other, other_value
):
    cfg = RGTPConfig(behaviour=behaviour, **{field: value})
    assert getattr(cfg, field) == value
    assert getattr(cfg, other) == other_value  # the other quirk still follows the preset
    assert cfg.behaviour == behaviour


def test_replace_with_a_new_behaviour_re_derives_unnamed_quirks():
    cfg = RGTPConfig(keep_tokens=5, tie_break="high")
    official = cfg.replace(behaviour="official")
    assert (official.tie_break, official.tracking_border, official.keep_tokens) == (
        "high",
        "official",
        5,
    )
    back = official.replace(behaviour="clean", tracking_border="official")
    assert (back.tie_break, back.tracking_border) == ("low", "official")
    # other changes keep the resolved quirks
    assert official.replace(keep_tokens=7).tie_break == "high"
    assert dataclasses.replace(official, seed=3).tracking_border == "official"


@pytest.mark.parametrize(
    "kwargs,key,value",
    [
        (dict(behaviour="paper"), "behaviour", "'paper'"),
        (dict(tie_break="first"), "tie_break", "'first'"),
        (dict(behaviour="official", tie_break="random"), "tie_break", "'random'"),
        (dict(tracking_border="zero"), "tracking_border", "'zero'"),
    ],
)
def test_bad_quirk_values_name_key_value_and_allowed(kwargs, key, value):
    with pytest.raises(ConfigError, match=f"{key}={value}: allowed one of \\("):
        RGTPConfig(**kwargs)


def test_dead_fields_are_gone():
    names = {f.name for f in dataclasses.fields(RGTPConfig)}
    assert not names & {"extra", "anchor_score_thresh"}
    with pytest.raises(TypeError):
        RGTPConfig(anchor_score_thresh=0.1)
