"""``--compare-to REV``: the ViTDet backbone of another git revision of the core (``rgtp/``), timed in the same run.

Speed ratios measured on different days or machines cannot be compared (a shared CPU drifts by more than the
differences that matter), so a change to the core is checked against the code it replaces in one process: the
revision's ``rgtp/`` is extracted with ``git archive`` under another package name, its model gets the current
model's weights, both see the same frames, and every dense, pruned and full call of both is interleaved. The core
must import itself relatively (``from .vit import``), as ``rgtp/`` does; a revision that does not is refused.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import functools
import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

from .cases import VitdetBackboneCase


def _imports_core_absolutely(source: str) -> bool:
    """Whether ``source`` has an ``import rgtp…`` / ``from rgtp… import`` statement: the extracted copy would then
    import the current code instead of its own."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(n == "rgtp" or n.startswith("rgtp.") for n in names):
            return True
    return False


def repo_root() -> Path:
    """The checkout this file belongs to (``--compare-to`` reads revisions from its git history)."""
    return Path(__file__).resolve().parents[3]


def extract_core(rev: str, repo: Path, dest: Path) -> str:
    """Extract ``rgtp/`` at revision ``rev`` of the git repository ``repo`` into ``dest`` as a package named after
    the commit (``rgtp_at_<sha>``); returns that name. Raises ``ValueError`` naming the revision when git cannot
    give it, or when one of its files imports ``rgtp`` absolutely."""
    try:
        sha = (
            _git(repo, "rev-parse", "--verify", "--short=12", f"{rev}^{{commit}}").decode().strip()
        )
        tar = _git(repo, "archive", "--format=tar", sha, "rgtp")
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        raise ValueError(
            f"--compare-to {rev}: git cannot give rgtp/ at that revision in {repo} "
            f"({err.decode(errors='replace').strip() or e})"
        ) from e
    name = f"rgtp_at_{sha}"
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            if not (m.isdir() or m.isfile()) or not m.name.startswith("rgtp/") or ".." in m.name:
                continue
            m.name = name + m.name[len("rgtp") :]
            t.extract(m, dest, filter="data")
    for f in sorted((dest / name).rglob("*.py")):
        if _imports_core_absolutely(f.read_text()):
            raise ValueError(
                f"--compare-to {rev}: {f.relative_to(dest / name)} imports rgtp absolutely; the copy would run "
                f"the current code (allowed: revisions whose core imports itself relatively)"
            )
    return name


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout


@functools.lru_cache(maxsize=None)
def import_core(rev: str, repo: Optional[Path] = None) -> ModuleType:
    """The core package at revision ``rev`` (of :func:`repo_root` by default), imported from a temporary folder
    that is removed when the process ends (once per revision)."""
    folder = Path(tempfile.mkdtemp(prefix="rgtp-baseline-"))
    atexit.register(shutil.rmtree, folder, True)
    name = extract_core(rev, repo or repo_root(), folder)
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


class BaselineBackboneCase(VitdetBackboneCase):
    """:class:`VitdetBackboneCase` with the model of another revision, on the weights and frames of ``current``."""

    def __init__(
        self, args: argparse.Namespace, keep: int, core: ModuleType, current: VitdetBackboneCase
    ) -> None:
        name = core.__name__
        vit, config, state = (
            importlib.import_module(f"{name}.{m}") for m in ("vit", "config", "state")
        )
        super().__init__(
            args, keep, vit=vit.PrunedViT, config=config.RGTPConfig, state=state.StreamState
        )
        # the current model's weights (both are initialised from seed 0, but in an order either may change)
        self.model.load_state_dict(current.model.state_dict(), strict=True)


def warm_up_and_compare(
    current: VitdetBackboneCase, base: VitdetBackboneCase, warmup: int
) -> float:
    """Warm ``base`` up as the current case was, compare both (:func:`compare_outputs`) and leave both streams
    after a full frame; returns the largest difference."""
    base.full()
    for _ in range(warmup):
        base.dense()
        base.pruned()
        base.full()
    diff = compare_outputs(current, base)
    current.full()
    base.full()
    return diff


def compare_outputs(a: VitdetBackboneCase, b: VitdetBackboneCase, pruned: int = 3) -> float:
    """Largest absolute difference of the feature maps of ``a`` and ``b`` over a first frame and ``pruned``
    pruned frames from the same frame index (0 when both run the same computation and keep the same tokens).
    """
    diff = 0.0
    for case in (a, b):
        case.i = 0
    for step in range(1 + pruned):
        outs = [c.full_output() if step == 0 else c.pruned_output() for c in (a, b)]
        diff = max(diff, (outs[0].float() - outs[1].float()).abs().max().item())
    return diff


def interleaved_fns(current: VitdetBackboneCase, base: VitdetBackboneCase) -> Dict[str, object]:
    """The timed calls of both, in the order they alternate."""
    return {
        "dense": current.dense,
        "baseline_dense": base.dense,
        "pruned": current.pruned,
        "baseline_pruned": base.pruned,
        "full": current.full,
        "baseline_full": base.full,
    }


def baseline_fields(rev: str, core: ModuleType, times: dict, diff: float) -> dict:
    """Row fields of the compared revision besides its medians and speed-ups: which it is, the largest output
    difference and the current code's median time relative to it per frame kind."""
    out = {"baseline_rev": rev, "baseline_package": core.__name__, "baseline_max_abs_diff": diff}
    for kind in ("dense", "full", "pruned"):
        out[f"time_vs_baseline_{kind}"] = times[kind].median / times[f"baseline_{kind}"].median
    return out


def markdown_baseline(rows: List[dict]) -> str:
    """The same-run table of the current code and the revision of ``--compare-to``."""
    lines = [
        "| keep | code | dense ms | full ms | pruned ms | weighted ms | speed-up weighted | speed-up pruned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for label, p in (("current", ""), (str(r["baseline_rev"]), "baseline_")):
            lines.append(
                f"| {r['keep']} | {label} | {1e3 * r[f'{p}dense_median_s']:.0f} "
                f"| {1e3 * r[f'{p}full_median_s']:.0f} | {1e3 * r[f'{p}pruned_median_s']:.0f} "
                f"| {1e3 * r[f'{p}weighted_s']:.0f} | {r[f'{p}speedup_weighted']:.2f}× "
                f"| {r[f'{p}speedup_pruned']:.2f}× |"
            )
    return "\n".join(lines)
