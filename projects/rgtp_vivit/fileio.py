"""Atomic writes: every output goes to a temporary name in its folder and is renamed when complete."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np


def _tmp_in(path: str, suffix: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


def atomic_write_json(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    tmp = _tmp_in(path, ".json")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save_npz(path: str, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (the temporary file also ends in .npz so numpy keeps the name)."""
    tmp = _tmp_in(path, ".npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
