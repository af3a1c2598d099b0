"""Fixtures of the detection tests (helpers live in ``vitdet_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vitdet_helpers import random_checkpoint, write_ilsvrc, write_json


@pytest.fixture(scope="session")
def vid_root(tmp_path_factory) -> Path:
    """A dataset root with both layouts of the same tiny VID split."""
    root = tmp_path_factory.mktemp("datasets")
    write_ilsvrc(root)
    write_json(root)
    return root


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A random checkpoint of the tiny model."""
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")
