"""rgtp.fileio: a write that completes replaces the target; a write that fails (the payload raises, the fsync or the
rename fails) leaves neither a partial file nor a temporary file, and an existing target keeps its content.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from rgtp import fileio
from rgtp.fileio import (
    atomic_path,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    dataset_path,
    datasets_root,
)


def _listing(folder) -> list:
    return sorted(os.listdir(folder))


def test_a_completed_write_replaces_the_target_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "sub" / "out.bin"  # missing folders are created
    with atomic_write(target) as f:
        f.write(b"abc")
        assert not target.exists()  # nothing visible under the final name before the end
    assert target.read_bytes() == b"abc"
    assert _listing(target.parent) == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open(), not mkstemp's 0600


def test_the_temporary_path_keeps_the_extension_and_lives_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "fig.png") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".png")
        assert os.path.basename(tmp).startswith(".fig.tmp-")
        with open(tmp, "wb") as f:
            f.write(b"png")
    assert _listing(tmp_path) == ["fig.png"]


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_failing_payload_leaves_no_file(tmp_path, error):
    target = tmp_path / "results.json"
    with pytest.raises(error):
        with atomic_write(target, "w") as f:
            f.write('{"partial": ')
            raise error("payload failed")
    assert _listing(tmp_path) == []


def test_a_failing_payload_keeps_the_previous_content(tmp_path):
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"new but incomplete")
            raise Boom()
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["model.pth"]


@pytest.mark.parametrize("step", ["replace", "fsync"])
def test_a_failing_rename_or_fsync_leaves_no_temporary_file(tmp_path, monkeypatch, step):
    target = tmp_path / "cache.npz"

    def fail(*args, **kwargs):
        raise OSError(f"simulated {step} failure")

    monkeypatch.setattr(fileio.os, step, fail)
    with pytest.raises(OSError, match="simulated"):
        atomic_save_npz(target, x=np.arange(3))
    monkeypatch.undo()
    assert _listing(tmp_path) == []


def test_invalid_json_is_refused_without_a_file(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json({"AP50": float("nan")}, tmp_path / "r.json")
    assert _listing(tmp_path) == []
    atomic_write_json({"AP50": None, "n": 3}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"AP50": None, "n": 3}


def test_the_payload_helpers_round_trip(tmp_path):
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "a.pth")
    assert torch.equal(torch.load(tmp_path / "a.pth")["w"], torch.ones(2))
    atomic_save_npz(tmp_path / "b.npz", x=np.arange(4))
    with np.load(tmp_path / "b.npz") as z:
        assert z["x"].tolist() == [0, 1, 2, 3]
    atomic_write_text("hello\n", tmp_path / "c.md")
    assert (tmp_path / "c.md").read_text() == "hello\n"
    assert _listing(tmp_path) == ["a.pth", "b.npz", "c.md"]
    # no temporary name inside the bytes
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "again.pth")
    assert (tmp_path / "again.pth").read_bytes() == (tmp_path / "a.pth").read_bytes()
    os.remove(tmp_path / "again.pth")
    with pytest.raises(ValueError, match="write mode"):
        with atomic_write(tmp_path / "d", "a"):
            pass


def test_dataset_root_lookup(monkeypatch, tmp_path):
    monkeypatch.delenv("RGTP_DATASETS", raising=False)
    assert datasets_root() == "datasets"
    assert dataset_path("vid") == os.path.join("datasets", "vid")
    monkeypatch.setenv("RGTP_DATASETS", str(tmp_path))
    assert dataset_path("vid") == str(tmp_path / "vid")
    assert dataset_path(str(tmp_path / "abs")) == str(tmp_path / "abs")


def test_no_writer_renames_files_by_itself_and_one_dataset_root_lookup():
    """Every atomic file write goes through rgtp.fileio (the one place that renames a finished file into place),
    and so does the lookup of $RGTP_DATASETS. (``rgtp_apps.demo_data`` publishes a whole generated folder by
    renaming it: not a file write.)"""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    patterns = (
        "os.replace(",
        "mkstemp(",
        "NamedTemporaryFile(",
        ".tmp.{os.getpid()}",
        'get("RGTP_DATASETS"',
    )
    offenders = [
        f"{p.relative_to(repo)}: {pat}"
        for folder in ("rgtp", "projects", "tools", "datasets")
        for p in sorted((repo / folder).rglob("*.py"))
        if p.relative_to(repo).as_posix() != "rgtp/fileio.py"
        for pat in patterns
        if pat in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
