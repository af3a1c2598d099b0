"""``tools/gpu_check.sh``: on a machine with a CUDA GPU, one command that runs the tests that need CUDA and the
672 backbone and detector benchmarks (batch 1 and 8 streams, fp32 and bf16; the backbone eager, ``--capture
cudagraph`` and ``--capture compile``, the detector eager), and writes every result into one folder:
``gpu_check.json`` (each step's command, status, seconds and benchmark rows), ``gpu_check.md`` (the tables) and
``runs/<step>/`` (each benchmark's own JSON and Markdown, the logs).

Steps run in order within a time budget (default 480 s, the 8 minutes of the check); a step that would start with
less than its estimate left is recorded as skipped, and each runs under a timeout of the time left. Needs no
network. On a machine without CUDA it refuses (exit status 2) with a message; ``--dry-run`` lists the steps
anywhere. Exit status 0 when every step passed, 1 when one failed or was skipped.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from rgtp.fileio import atomic_write_json, atomic_write_text, json_safe

REPO = Path(__file__).resolve().parents[3]

#: The CUDA tests (skipped on the CPU).
CUDA_TESTS = ["tests/test_cuda.py"]


@dataclass
class Step:
    """One command of the check."""

    name: str
    argv: List[str]
    estimate_s: float  # rough seconds on one data-centre GPU, for the budget

    @property
    def is_benchmark(self) -> bool:
        return "tools/benchmark.py" in self.argv


def plan(python: str, out: Path, quick: bool = False) -> List[Step]:
    """The steps: the CUDA tests, then one benchmark process per model and capture mode, each over batch 1 and 8
    and fp32 and bf16 (``quick``: batch 1, fp32); ``--capture compile`` at batch 1 only (inductor compiles for
    minutes per shape)."""
    steps = [Step("cuda-tests", [python, "-m", "pytest", "-q", *CUDA_TESTS], 60)]
    batches = ["1"] if quick else ["1", "8"]
    dtypes = ["fp32"] if quick else ["fp32", "bf16"]
    for model, capture, estimate in (
        ("vitdet-backbone", "none", 40),
        ("vitdet-backbone", "cudagraph", 50),
        ("vitdet-detector", "none", 80),
        ("vitdet-backbone", "compile", 200),
    ):
        b = batches[:1] if capture == "compile" else batches
        name = f"{model.split('-')[1]}-{capture}"
        argv = [python, "tools/benchmark.py", "--model", model, "--size", "672", "--keep", "512"]
        argv += ["--batch", *b, "--dtype", *dtypes, "--device", "cuda", "--capture", capture]
        argv += ["--out", str(out / "runs" / name)]
        steps.append(Step(name, argv, estimate * (0.5 if quick else 1)))
    return steps


def cuda_status() -> Optional[str]:
    """None when a CUDA device is usable, else why not."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        return f"torch cannot be imported ({e})"
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA (a CPU-only build)"
        return (
            f"no CUDA device is visible (torch {torch.__version__}, built with {built}; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})"
        )
    return None


def run_steps(steps: List[Step], out: Path, budget_s: float) -> List[dict]:
    """Run ``steps`` within ``budget_s``; one record per step."""
    import json

    start = time.monotonic()
    records = []
    for step in steps:
        left = budget_s - (time.monotonic() - start)
        rec: dict = {"name": step.name, "argv": step.argv, "estimate_s": step.estimate_s}
        if left < step.estimate_s:
            rec.update(status="skipped", reason=f"{left:.0f} s left of the {budget_s:.0f} s budget")
            records.append(rec)
            continue
        log = out / "runs" / f"{step.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(log, "w") as f:
            try:
                rc = subprocess.run(
                    step.argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=left
                ).returncode
            except subprocess.TimeoutExpired:
                rc = None
        rec["seconds"] = time.monotonic() - t0
        rec["log"] = str(log.relative_to(out))
        rec["status"] = "passed" if rc == 0 else ("timeout" if rc is None else f"failed ({rc})")
        result = out / "runs" / step.name / "benchmark.json"
        if step.is_benchmark and result.exists():
            rec["rows"] = json.loads(result.read_text())["rows"]
        records.append(rec)
        print(f"gpu_check: {step.name}: {rec['status']} in {rec['seconds']:.0f} s", flush=True)
    return records


def summary(records: List[dict]) -> str:
    """The Markdown of ``gpu_check.md``: the steps, then every benchmark table."""
    from .report import markdown

    lines = ["| step | status | seconds |", "|---|---|---|"]
    for r in records:
        secs = f"{r['seconds']:.0f}" if "seconds" in r else "–"
        lines.append(f"| {r['name']} | {r['status']} | {secs} |")
    rows = [row for r in records for row in r.get("rows", [])]
    if rows:
        lines += ["", markdown(rows)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/gpu_check.sh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="output/gpu_check", help="the folder of every result")
    p.add_argument("--budget-s", type=float, default=480.0, help="time budget in seconds")
    p.add_argument("--quick", action="store_true", help="batch 1 and fp32 only")
    p.add_argument("--python", default=sys.executable, help="the interpreter of every step")
    p.add_argument("--dry-run", action="store_true", help="list the steps, run nothing")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {args.budget_s}")
    out = Path(args.out)
    steps = plan(args.python, out, args.quick)
    if args.dry_run:
        total = sum(s.estimate_s for s in steps)
        for s in steps:
            print(f"{s.name}: {' '.join(s.argv)}")
        print(f"gpu_check: {len(steps)} steps, about {total:.0f} s of {args.budget_s:.0f} s")
        return 0
    why = cuda_status()
    if why is not None:
        print(
            f"gpu_check: refusing to run: {why}. This check needs a machine with a CUDA GPU (use --dry-run "
            f"to list its steps).",
            file=sys.stderr,
        )
        return 2
    import torch

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    records = run_steps(steps, out, args.budget_s)
    payload = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "started": t0,
        "seconds": time.time() - t0,
        "budget_s": args.budget_s,
        "steps": records,
    }
    atomic_write_json(json_safe(payload), out / "gpu_check.json")
    atomic_write_text(summary(records) + "\n", out / "gpu_check.md")
    print(f"gpu_check: results in {out}/gpu_check.json and {out}/gpu_check.md")
    return 0 if all(r["status"] == "passed" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
