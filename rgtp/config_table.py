"""One path from a framework config to :class:`rgtp.config.RGTPConfig`, and one error style for every config key.

Each project declares a *table*: for every :class:`~rgtp.config.RGTPConfig` field it sets, the :class:`Key` of its
config section that holds it (detectron2 ``MODEL.RGTP.KEEP_TOKENS``, PySlowFast ``RGTP.KEEP_TOKENS``), how the value
is read (:data:`BOOL`, :data:`INT`, :data:`FLOAT`, :data:`STR`, :data:`INTS`) and which value of the key stands for
the field's ``None`` (``""``, ``0``, ``[]`` or ``-1.0``)::

    TABLE = {"keep_tokens": Key("KEEP_TOKENS", INT, none=0, none_means="use keep_ratio"), ...}
    rgtp = from_table(cfg.MODEL.RGTP, TABLE, "MODEL.RGTP", num_tokens=grid * grid)

:func:`from_table` builds the core config, so the core's validation is the only source of allowed values; a
:class:`~rgtp.config.ConfigError` it raises is re-raised under the project's key, with the value as the config
holds it and what is allowed, field names spelled as the project's keys::

    invalid config MODEL.RGTP.KEEP_TOKENS=-1: allowed an integer >= 1, or 0 = use MODEL.RGTP.KEEP_RATIO

The project-only keys are checked with the same message (:func:`config_error`, :func:`check_keys` and the rules
:func:`one_of`, :func:`integer`, :func:`number`, :func:`boolean`). Config sections are read as mappings (yacs and
fvcore ``CfgNode`` are dict subclasses), so this module imports neither detectron2 nor fvcore.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from .config import ConfigError, RGTPConfig

__all__ = [
    "Kind",
    "Key",
    "BOOL",
    "INT",
    "FLOAT",
    "STR",
    "INTS",
    "from_table",
    "read_field",
    "config_error",
    "Rule",
    "one_of",
    "integer",
    "number",
    "boolean",
    "each",
    "check_keys",
    "lookup",
    "shared_meaning",
]

_UNSET = object()


# ------------------------------------------------------------------------------------------------ error style
def config_error(key: str, value: Any, allowed: str) -> ConfigError:
    """The error of every config key: ``invalid config <KEY>=<value>: allowed <what>``."""
    return ConfigError(f"invalid config {key}={value!r}: allowed {allowed}", key, value, allowed)


# ------------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Kind:
    """How a config value is read: ``convert`` raises ``TypeError``/``ValueError`` on a value that is not
    ``allowed``."""

    allowed: str
    convert: Callable[[Any], Any]


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(v)
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise TypeError(v)
    return int(v)


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(v)
    return float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(v)
    return v


def _ints(v: Any) -> Tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(v)
    return tuple(_int(i) for i in v)


BOOL = Kind("True or False", _bool)
INT = Kind("an integer", _int)
FLOAT = Kind("a number", _float)
STR = Kind("a string", _str)
INTS = Kind("a list of integers", _ints)


@dataclass(frozen=True)
class Key:
    """The framework key of one :class:`~rgtp.config.RGTPConfig` field.

    Attributes:
        name: the key in its section (``"KEEP_TOKENS"``).
        kind: how its value is read.
        none: the value of the key that stands for the field's ``None`` (e.g. ``""`` = from the preset, ``0`` = use
            the ratio); unset = the field is never None.
        none_means: what that value means, in field names (shown in errors, field names become key names).
        unless: another field; when that one is not None this field is None (``KEEP_RATIO`` is used only when
            ``KEEP_TOKENS`` is unset). The value is still validated on its own.
    """

    name: str
    kind: Kind
    none: Any = _UNSET
    none_means: str = ""
    unless: str = ""

    def is_none(self, raw: Any) -> bool:
        if self.none is _UNSET:
            return False
        if isinstance(self.none, (list, tuple)):
            return isinstance(raw, (list, tuple)) and list(raw) == list(self.none)
        return type(raw) is not bool and raw == self.none


Table = Mapping[str, Key]


def _spelled(text: str, table: Table, prefix: str, key: Optional[Key]) -> str:
    """``text`` of the core with field names spelled as the project's keys and None as ``key``'s none value."""
    names = {f: f"{prefix}.{k.name}" for f, k in table.items()}
    if names:
        pattern = r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b"
        text = re.sub(pattern, lambda m: names[m.group(1)], text)
    if key is not None and key.none is not _UNSET:
        text = re.sub(r"\bNone\b", repr(key.none), text)
    return text


def _renamed(
    err: ConfigError, section: Mapping[str, Any], table: Table, prefix: str
) -> ConfigError:
    """``err`` of the core re-raised under the project's key, value and vocabulary."""
    key = table.get(err.key) if err.key else None
    if key is None:  # a field this project has no key for (or a core error without a field)
        where = (
            f"{prefix} has no key for RGTPConfig.{err.key}" if err.key else f"the {prefix} section"
        )
        return ConfigError(f"{_spelled(str(err), table, prefix, None)} ({where})")
    allowed = err.allowed
    mentions_none = re.search(r"\bNone\b", allowed) is not None
    allowed = _spelled(allowed, table, prefix, key)
    if key.none_means and not mentions_none:
        allowed += f", or {key.none!r} = {_spelled(key.none_means, table, prefix, None)}"
    return config_error(f"{prefix}.{key.name}", section[key.name], allowed)


def _read(section: Mapping[str, Any], table: Table, field: str, prefix: str) -> Any:
    key = table[field]
    if key.name not in section:
        raise ConfigError(f"config key {prefix}.{key.name} is missing (RGTPConfig.{field})")
    raw = section[key.name]
    if key.is_none(raw):
        return None
    try:
        return key.kind.convert(raw)
    except (TypeError, ValueError):
        allowed = key.kind.allowed
        if key.none is not _UNSET:
            allowed += f", or {key.none!r}" + (
                f" = {_spelled(key.none_means, table, prefix, None)}" if key.none_means else ""
            )
        raise config_error(f"{prefix}.{key.name}", raw, allowed) from None


def _build(
    fields: Dict[str, Any], section: Mapping[str, Any], table: Table, prefix: str
) -> RGTPConfig:
    try:
        return RGTPConfig(**fields)
    except ConfigError as e:
        raise _renamed(e, section, table, prefix) from None


def from_table(
    section: Mapping[str, Any], table: Table, prefix: str, num_tokens: Optional[int] = None
) -> RGTPConfig:
    """The validated :class:`~rgtp.config.RGTPConfig` of the config ``section`` (e.g. ``cfg.MODEL.RGTP``), whose
    keys ``table`` maps to core fields; fields not in the table keep their defaults. With ``num_tokens`` the kept
    count is also checked against the token grid N. An invalid value raises :class:`~rgtp.config.ConfigError`
    naming ``<prefix>.<KEY>``, the value and what is allowed.
    """
    fields = {field: _read(section, table, field, prefix) for field in table}
    for field, key in table.items():
        if key.unless and fields.get(key.unless) is not None and fields[field] is not None:
            _build(
                {field: fields[field]}, section, table, prefix
            )  # validated on its own, then unused
            fields[field] = None
    cfg = _build(fields, section, table, prefix)
    if num_tokens is not None:
        try:
            cfg.validate(num_tokens)
        except ConfigError as e:
            raise _renamed(e, section, table, prefix) from None
    return cfg


def read_field(section: Mapping[str, Any], table: Table, prefix: str, field: str) -> Any:
    """The value of one field, read and validated by the core on its own (e.g. the behaviour preset a project
    needs for its own quirk keys)."""
    value = _read(section, table, field, prefix)
    return getattr(_build({field: value}, section, table, prefix), field)


# ------------------------------------------------------------------------------------------------ project keys
@dataclass(frozen=True)
class Rule:
    """A check of one project-only key: ``ok(value)`` and the text of what is ``allowed``."""

    allowed: str
    ok: Callable[[Any], bool]


def one_of(*choices: Any) -> Rule:
    return Rule(f"one of {tuple(choices)}", lambda v: v in choices)


def integer(minimum: int = 1) -> Rule:
    return Rule(
        f"an integer >= {minimum}",
        lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= minimum,
    )


def number(low: float, high: float, brackets: str = "[]") -> Rule:
    """A finite number in ``low``..``high``; ``brackets`` ``"[)"`` etc. say which ends are included."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        above = v >= low if brackets[0] == "[" else v > low
        below = v <= high if brackets[1] == "]" else v < high
        return above and below

    return Rule(f"a number in {brackets[0]}{low:g}, {high:g}{brackets[1]}", ok)


def boolean() -> Rule:
    return Rule("True or False", lambda v: isinstance(v, bool))


def lookup(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg["A"]["B"]`` for ``key`` ``"A.B"``."""
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_keys(cfg: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """Check each dotted key of ``cfg`` against its rule; the first violation raises :func:`config_error`."""
    for key, rule in rules.items():
        value = lookup(cfg, key)
        if not rule.ok(value):
            raise config_error(key, value, rule.allowed)


def each(rule: Rule) -> Rule:
    """``rule`` for every element of a list value."""
    return Rule(
        f"a list, each element {rule.allowed}",
        lambda v: isinstance(v, (list, tuple)) and all(rule.ok(x) for x in v),
    )


def shared_meaning(tables: Sequence[Table]) -> Dict[str, str]:
    """The fields that two tables read differently (kind, none value or ``unless``), with the difference; a
    setting has one meaning in every project (the key names may differ: ``ENABLED`` / ``ENABLE``).
    """
    out: Dict[str, str] = {}
    first, *rest = tables
    for other in rest:
        for field in set(first) & set(other):
            a, b = first[field], other[field]
            if (a.kind, a.none, a.unless) != (b.kind, b.none, b.unless):
                out[field] = (
                    f"{a.name}: {a.kind.allowed}/{a.none!r} vs {b.name}: {b.kind.allowed}/{b.none!r}"
                )
    return out


@contextlib.contextmanager
def project_keys(section: Mapping[str, Any], table: Table, prefix: str) -> Iterator[None]:
    """Within this context a :class:`~rgtp.config.ConfigError` of the core (e.g. a model rejecting a setting it
    cannot honour when it is built) is re-raised under the project's key, value and vocabulary."""
    try:
        yield
    except ConfigError as e:
        if e.key is None:
            raise
        raise _renamed(e, section, table, prefix) from None
