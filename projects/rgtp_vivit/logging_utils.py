"""Logging set-up: INFO to stdout (and OUTPUT_DIR/stdout.log) on the master process, warnings elsewhere."""

from __future__ import annotations

import logging
import os
import sys

from .distributed import is_master

_FMT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def setup_logging(output_dir: str = "") -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_rgtp", False):
            root.removeHandler(h)
    level = logging.INFO if is_master() else logging.WARNING
    root.setLevel(level)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(_FMT, datefmt="%H:%M:%S"))
    handler._rgtp = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if output_dir and is_master():
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "stdout.log"))
        fh.setFormatter(logging.Formatter(_FMT))
        fh._rgtp = True  # type: ignore[attr-defined]
        root.addHandler(fh)
