"""Fixtures of the ViViT recogniser tests (helpers in vivit_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vivit_helpers import REPO, make_epic, make_kinetics


@pytest.fixture(scope="session")
def kinetics_root(tmp_path_factory) -> Path:
    """A tiny Kinetics-format dataset (5 videos, 3 classes, one clip shorter than a view)."""
    return make_kinetics(tmp_path_factory.mktemp("k400"))


@pytest.fixture(scope="session")
def epic_root(tmp_path_factory) -> Path:
    """A tiny EPIC-Kitchens-format dataset (4 segments of 2 videos)."""
    return make_epic(tmp_path_factory.mktemp("epic"))


@pytest.fixture(autouse=True)
def _chdir_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
