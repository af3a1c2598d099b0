"""``tools/gpu_check.sh`` on a machine without CUDA: its arguments and its refusal (the check itself needs a GPU:
``tests/test_cuda.py`` and the benchmarks it runs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from rgtp_apps.benchmark.gpu_check import cuda_status, main, plan, summary

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine that has one
    return subprocess.run(
        [str(SCRIPT), *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=120
    )


def test_refuses_without_cuda_with_a_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run("--out", str(out), tmp=tmp_path)
    assert proc.returncode == 2
    assert "gpu_check: refusing to run: no CUDA device is visible" in proc.stderr
    assert "needs a machine with a CUDA GPU" in proc.stderr
    assert not out.exists()  # nothing written


def test_dry_run_lists_every_step_and_writes_nothing(tmp_path: Path) -> None:
    dry = _run("--dry-run", "--out", str(tmp_path / "o"), tmp=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "tests/test_cuda.py" in dry.stdout
    for capture in ("none", "cudagraph", "compile"):
        assert f"--capture {capture}" in dry.stdout
    assert "--model vitdet-detector" in dry.stdout and "--batch 1 8 --dtype fp32 bf16" in dry.stdout
    assert not (tmp_path / "o").exists()


def test_arguments(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--budget-s" in capsys.readouterr().out
    for bad in (["--budget-s", "0"], ["--budget-s", "x"], ["--bogus"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2 and "usage: tools/gpu_check.sh" in capsys.readouterr().err, bad


def test_plan_fits_the_budget_and_summary_lists_steps(tmp_path: Path) -> None:
    steps = plan("python", tmp_path)
    assert sum(s.estimate_s for s in steps) <= 480
    assert steps[0].name == "cuda-tests" and len({s.name for s in steps}) == len(steps)
    assert all(str(tmp_path / "runs") in " ".join(s.argv) for s in steps[1:])
    quick = plan("python", tmp_path, quick=True)
    assert all("8" not in s.argv and "bf16" not in s.argv for s in quick)
    text = summary([{"name": "cuda-tests", "status": "passed", "seconds": 3.0}])
    assert "| cuda-tests | passed | 3 |" in text


@pytest.mark.skipif(cuda_status() is None, reason="a CUDA device is visible")
def test_cuda_status_says_why() -> None:
    assert "no CUDA device is visible" in (cuda_status() or "")
