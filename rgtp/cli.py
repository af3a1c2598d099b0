"""One error style for every command-line entry point (``tools/*.py``, ``datasets/prepare_*.py``).

A user error (a bad config key or value, a missing or unusable input file, a checkpoint of the wrong kind, an
evaluation that measured nothing) is printed as one line ``error: <what, where, what is allowed or how to fix>`` on
stderr and the process exits with status 2; no traceback unless ``--debug`` is on the command line. Programming
errors keep their traceback (exit status 1).

This module imports neither detectron2 nor fvcore: user errors are recognised by type (:class:`UserError`,
:class:`rgtp.config.ConfigError`, ``FileNotFoundError``), by class name (the projects' ``DatasetError``,
``VideoError``, ``CheckpointError``, ``DemoError``) or by translators the projects register with
:func:`register_translator`.

::

    from rgtp.cli import run_main

    if __name__ == "__main__":
        sys.exit(run_main(main))          # main(argv) -> int; "--debug" is removed from argv first

It also resolves relative paths found in a config (:func:`resolve_config_path`): a relative path is taken relative
to the working directory when it exists there, else relative to the repository root (the folder holding
``configs/``), so that the commands of the README work from any folder.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Optional, Sequence

from .config import ConfigError

__all__ = [
    "UserError",
    "EXIT_USER_ERROR",
    "register_translator",
    "user_message",
    "run_main",
    "pop_debug",
    "repo_root",
    "resolve_config_path",
    "positive_float",
]

#: Exit status of a user error.
EXIT_USER_ERROR = 2

#: Class names of the projects' user-facing errors (matched by name: this module imports no project).
USER_ERROR_NAMES = {
    "ConfigError",
    "DatasetError",
    "VideoError",
    "CheckpointError",
    "DemoError",
    "AnnotationError",
    "UserError",
}

_TRANSLATORS: List[Callable[[BaseException], Optional[str]]] = []


class UserError(RuntimeError):
    """An input, a config or a result the user can fix; the message says what, where and how."""


def register_translator(fn: Callable[[BaseException], Optional[str]]) -> None:
    """Register ``fn(exc) -> message or None``; a message marks ``exc`` as a user error."""
    if fn not in _TRANSLATORS:
        _TRANSLATORS.append(fn)


def _is_bad_config_key(exc: BaseException) -> bool:
    return isinstance(exc, KeyError) and "Non-existent config key" in str(exc)


def user_message(exc: BaseException) -> Optional[str]:
    """The one-line message of a user error, or None for anything else (a bug: keep the traceback)."""
    for fn in _TRANSLATORS:
        msg = fn(exc)
        if msg:
            return msg
    if isinstance(exc, (UserError, ConfigError, FileNotFoundError)) or any(
        t.__name__ in USER_ERROR_NAMES for t in type(exc).__mro__
    ):
        if isinstance(exc, FileNotFoundError) and exc.filename and not exc.args[1:]:
            return str(exc)
        if isinstance(exc, FileNotFoundError) and exc.filename:
            return f"file not found: {exc.filename}"
        return str(exc)
    if _is_bad_config_key(exc):
        return f"bad config key: {exc.args[0] if exc.args else exc}"
    return None


def pop_debug(argv: Optional[Sequence[str]]) -> tuple:
    """(argv without ``--debug``, whether it was there); ``argv`` None means ``sys.argv[1:]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    return [a for a in args if a != "--debug"], debug


def run_main(
    main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None
) -> int:
    """Call ``main(argv)`` and return its exit status; a user error prints ``error: ...`` and returns 2 (with
    ``--debug`` anywhere in ``argv`` the exception propagates with its traceback)."""
    args, debug = pop_debug(argv)
    try:
        rc = main(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted into user errors and bugs below
        msg = user_message(e)
        if msg is None or debug:
            raise
        print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(rc or 0)


def repo_root() -> str:
    """The repository root: the folder above the ``rgtp`` package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_config_path(
    value: str, key: str, config_file: str = "", must_exist: bool = True
) -> str:
    """Resolve the relative path ``value`` of config key ``key``: the working directory first, then the repository
    root. Absolute paths, URLs and '' pass unchanged. A path found nowhere raises :class:`UserError` naming the
    key, the config file that set it and every place looked at (``must_exist`` False returns it unchanged).
    """
    if not value or "://" in value or os.path.isabs(value):
        if must_exist and value and "://" not in value and not os.path.exists(value):
            raise UserError(_not_found(value, key, config_file, [value]))
        return value
    tried = [os.path.abspath(value), os.path.join(repo_root(), value)]
    for p in tried:
        if os.path.exists(p):
            return value if p == tried[0] else p
    if not must_exist:
        return value
    raise UserError(_not_found(value, key, config_file, tried))


def _not_found(value: str, key: str, config_file: str, tried: Sequence[str]) -> str:
    where = f" (set in {config_file} or an override)" if config_file else ""
    return (
        f"{key}={value!r}{where} does not exist: looked at {', '.join(repr(t) for t in tried)}; "
        f"relative paths are relative to the working directory or the repository root {repo_root()!r}; "
        f"fix the path or override it with '{key} <path>'"
    )


def positive_float(name: str) -> Callable[[str], float]:
    """An argparse ``type`` accepting only a finite number > 0; the error names the option ``name``."""
    import argparse
    import math

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, got {text!r}") from None
        if not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a number > 0, got {text!r}")
        return v

    return parse
