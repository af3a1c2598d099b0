"""Atomic writes of the recogniser's outputs: the core helpers of :mod:`rgtp.fileio` (a temporary file in the
target folder, fsynced and renamed when complete, removed on failure), re-exported under the names used here.
"""

from __future__ import annotations

from rgtp.fileio import (
    atomic_path,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write_json,
    json_safe,
)

__all__ = ["atomic_path", "atomic_save_npz", "atomic_torch_save", "atomic_write_json", "json_safe"]
