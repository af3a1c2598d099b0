"""``tools/benchmark.py --compare-to REV`` (:mod:`rgtp_apps.benchmark.baseline`): another revision's core is extracted
and imported under its own name, runs its own code on the current weights, and is timed in the same run.

Speed is not asserted (benchmarks measure it); the runs use a 4×4 token grid.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from rgtp_apps.benchmark import baseline
from rgtp_apps.benchmark.cases import VitdetBackboneCase
from rgtp_apps.benchmark.cli import main

REPO = baseline.repo_root()
TINY = ["--size", "64", "--keep", "8", "--warmup", "1", "--repeats", "2", "--device", "cpu"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, check=True, text=True
    ).stdout


def _repo_with_core(tmp: Path) -> Path:
    """A git repository holding a copy of the working tree's rgtp/ (committed), to make revisions from."""
    repo = tmp / "repo"
    shutil.copytree(REPO / "rgtp", repo / "rgtp", ignore=shutil.ignore_patterns("__pycache__"))
    _git(tmp, "init", "-q", str(repo))
    _commit(repo, "copy")
    return repo


def _commit(repo: Path, msg: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", msg)
    return _git(repo, "rev-parse", "HEAD").strip()


def test_extract_core_gives_the_files_git_has_at_that_revision(tmp_path: Path) -> None:
    name = baseline.extract_core("HEAD", REPO, tmp_path)
    assert name.startswith("rgtp_at_")
    for f in ("vit.py", "blocks.py", "__init__.py"):
        assert (tmp_path / name / f).read_text() == _git(REPO, "show", f"HEAD:rgtp/{f}")


def test_a_revision_that_git_cannot_give_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--compare-to no-such-rev: git cannot give rgtp/"):
        baseline.extract_core("no-such-rev", REPO, tmp_path)


def test_a_core_that_imports_itself_absolutely_is_refused(tmp_path: Path) -> None:
    repo = _repo_with_core(tmp_path)
    vit = repo / "rgtp" / "vit.py"
    vit.write_text("from rgtp.config import RGTPConfig\n" + vit.read_text())
    _commit(repo, "absolute import")
    with pytest.raises(ValueError, match=r"vit\.py imports rgtp absolutely"):
        baseline.extract_core("HEAD", repo, tmp_path / "out")


def test_the_baseline_runs_its_own_code_on_the_current_weights(tmp_path: Path) -> None:
    # revision A: the current core; revision B: the same with the MLP's output shifted (a different computation)
    repo = _repo_with_core(tmp_path)
    same = _git(repo, "rev-parse", "HEAD").strip()
    blocks = repo / "rgtp" / "blocks.py"
    src = blocks.read_text()
    old = "return counting.linear(self.act(counting.linear(x, self.fc1)), self.fc2)"
    assert old in src
    blocks.write_text(src.replace(old, old + " + 1e-3"))
    shifted = _commit(repo, "shifted MLP")
    args = argparse.Namespace(device="cpu", dtype="fp32", size=64, rollout="forward", batch=1)
    torch.set_num_threads(1)
    current = VitdetBackboneCase(args, 8)
    diffs = {}
    for label, rev in (("same", same), ("shifted", shifted)):
        core = baseline.import_core(rev, repo)
        assert core.__name__ == f"rgtp_at_{rev[:12]}"
        assert not core.__file__.startswith(str(REPO))
        base = baseline.BaselineBackboneCase(args, 8, core, current)
        assert type(base.model).__module__ == f"{core.__name__}.vit"
        for k, v in current.model.state_dict().items():
            assert torch.equal(base.model.state_dict()[k], v)
        with torch.inference_mode():
            diffs[label] = baseline.compare_outputs(current, base)
    assert diffs["same"] == 0.0
    assert diffs["shifted"] > 1e-4


def test_baseline_rows_and_table(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        (row,) = main(TINY + ["--compare-to", "HEAD", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert row["baseline_rev"] == "HEAD"
    assert row["baseline_max_abs_diff"] >= 0.0
    if not _git(REPO, "status", "--porcelain", "--", "rgtp"):  # the working tree's core is HEAD's
        assert row["baseline_max_abs_diff"] == 0.0
    for kind in ("dense", "full", "pruned"):
        assert row[f"baseline_{kind}_median_s"] > 0
        assert row[f"time_vs_baseline_{kind}"] == pytest.approx(
            row[f"{kind}_median_s"] / row[f"baseline_{kind}_median_s"]
        )
    f = row["full_fraction"]
    weighted = f * row["baseline_full_median_s"] + (1 - f) * row["baseline_pruned_median_s"]
    assert row["baseline_speedup_weighted"] == pytest.approx(
        row["baseline_dense_median_s"] / weighted
    )
    md = (tmp_path / "benchmark.md").read_text()
    assert "| 8 | current |" in md and "| 8 | HEAD |" in md


@pytest.mark.parametrize("extra", [["--model", "vivit"], ["--capture", "compile"]])
def test_baseline_needs_the_eager_backbone(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list
) -> None:
    with pytest.raises(SystemExit):
        main(["--compare-to", "HEAD", "--out", str(tmp_path)] + extra)
    assert "--compare-to is implemented for --model vitdet-backbone" in capsys.readouterr().err
    assert not (tmp_path / "benchmark.json").exists()


def test_a_revision_git_cannot_give_is_a_command_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as e:
        main(TINY + ["--compare-to", "no-such-rev", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--compare-to no-such-rev: git cannot give rgtp/" in capsys.readouterr().err
    assert not (tmp_path / "benchmark.json").exists()
