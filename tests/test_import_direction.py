"""Imports run one way: tools → rgtp_apps → projects → rgtp. The core imports neither detectron2, fvcore nor the
projects, and the two projects never import each other nor the applications (nor does the recogniser import
detectron2). Checked in fresh
interpreters, so that nothing imported by other tests hides a violation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CORE_MODULES = sorted(
    "rgtp." + ".".join(p.relative_to(REPO / "rgtp").with_suffix("").parts)
    for p in (REPO / "rgtp").rglob("*.py")
    if p.name != "__init__.py"
)


def _imported_after(modules: list[str]) -> set[str]:
    """Top-level names of every module loaded after importing ``modules`` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_lists_its_modules():
    assert "rgtp.vit" in CORE_MODULES and "rgtp.blocks" in CORE_MODULES


def test_core_imports_no_framework_and_no_project():
    loaded = _imported_after(["rgtp", *CORE_MODULES])
    assert not loaded & {"detectron2", "fvcore", "rgtp_vitdet", "rgtp_vivit", "rgtp_apps", "av"}


@pytest.mark.parametrize(
    "project, forbidden",
    [
        ("rgtp_vivit", {"detectron2", "rgtp_vitdet", "rgtp_apps"}),
        ("rgtp_vitdet", {"rgtp_vivit", "rgtp_apps"}),
    ],
)
def test_projects_do_not_import_each_other(project, forbidden):
    modules = [
        f"{project}.{p.stem}"
        for p in (REPO / "projects" / project).glob("*.py")
        if p.name != "__init__.py"
    ]
    loaded = _imported_after([project, *modules])
    assert not loaded & forbidden
