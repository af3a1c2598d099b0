"""Every command block of README.md, MODEL_ZOO.md and docs/*.md marked runnable parses, and the demo ones run
(issue 16).

A block is marked by an HTML comment on the line before its fence: ``<!-- runnable -->`` (each ``python
tools/X.py ...`` or ``python datasets/X.py ...`` command of it must name an existing script whose ``--help`` lists
every ``--flag`` the command uses; flags after ``--opts`` are config overrides and are not checked) or ``<!--
runnable: demo -->`` (the same check, and the block is executed on the committed demo models: ``tools/demo_video.py``
commands with ``--max-frames 4`` added (or up to their ``--save-frame``), ``--output`` / ``--save-frame`` files and ``"output/..."`` paths of Python
blocks redirected to a temporary folder). Shell lines that are not Python commands (``make demo``, ``export``,
``cp``) are not run.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "MODEL_ZOO.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = re.compile(
    r"<!--\s*runnable(?::\s*(?P<kind>[\w-]+))?\s*-->\s*\n```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S
)
GLOBAL_FLAGS = {
    "--help",
    "--debug",
}  # --debug is taken by rgtp.cli.run_main before argparse sees the line
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


class Block(NamedTuple):
    path: Path
    line: int
    kind: str  # "" or "demo"
    lang: str
    body: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks() -> List[Block]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in MARK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(Block(path, line, m.group("kind") or "", m.group("lang"), m.group("body")))
    return out


BLOCKS = blocks()


def commands(body: str) -> List[List[str]]:
    """The Python commands of a shell block, as argument lists starting at the script (``VAR=x`` prefixes and
    comments dropped, continuation lines joined)."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        py = [i for i, w in enumerate(words) if w == "python" or w.endswith("/python")]
        if not py or "-m" in words[py[0] + 1 : py[0] + 2]:
            continue
        out.append(words[py[0] + 1 :])
    return out


@functools.lru_cache(maxsize=None)
def help_flags(script: str) -> frozenset:
    proc = subprocess.run(
        [sys.executable, script, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert proc.returncode == 0, f"{script} --help failed:\n{proc.stderr[-2000:]}"
    return frozenset(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", proc.stdout))


def test_runnable_blocks_exist():
    kinds = {b.kind for b in BLOCKS}
    assert "demo" in kinds and "" in kinds
    files = {b.path.name for b in BLOCKS}
    assert {"README.md", "visualization.md"} <= files
    assert all(b.lang in ("bash", "python") for b in BLOCKS), [
        b.id for b in BLOCKS if b.lang not in ("bash", "python")
    ]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "bash"], ids=lambda b: b.id)
def test_command_flags_exist(block):
    cmds = commands(block.body)
    assert cmds or "make" in block.body, f"{block.id}: no python command in a runnable block"
    for args in cmds:
        script = args[0]
        assert (REPO / script).is_file(), f"{block.id}: {script} does not exist"
        known = help_flags(script) | GLOBAL_FLAGS
        for word in args[1:]:
            if word == "--opts":
                break  # config overrides follow
            if word.startswith("--"):
                flag = word.split("=", 1)[0]
                assert (
                    flag in known
                ), f"{block.id}: {script} has no option {flag} (it has {sorted(known)})"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=lambda b: b.id)
def test_python_blocks_compile(block):
    compile(block.body, block.id, "exec")


def _redirect(args: List[str], tmp: Path) -> List[str]:
    out = list(args)
    for i, w in enumerate(out):
        if w == "--output":
            out[i + 1] = str(tmp / Path(out[i + 1]).name)
        if w == "--save-frame":
            out[i + 2] = str(tmp / Path(out[i + 2]).name)
    if out[0].endswith("demo_video.py") and "--max-frames" not in out:
        save = int(out[out.index("--save-frame") + 1]) if "--save-frame" in out else 0
        out[1:1] = ["--max-frames", str(max(4, save + 1))]
    return out


_RAN: dict = {}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "demo"], ids=lambda b: b.id)
def test_demo_blocks_run_on_the_committed_models(block, tmp_path):
    if block.lang == "python":
        code = re.sub(
            r"([\"'])(output|docs)/", lambda m: f"{m.group(1)}{tmp_path}/{m.group(2)}/", block.body
        )
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              timeout=600, env=ENV)  # fmt: skip
        assert proc.returncode == 0, f"{block.id}:\n{proc.stderr[-3000:]}"
        return
    for args in commands(block.body):
        key = tuple(args)
        if key in _RAN:  # the same command in another document
            continue
        run = _redirect(args, tmp_path)
        proc = subprocess.run([sys.executable, *run], cwd=REPO, capture_output=True, text=True, timeout=600,
                              env=ENV)  # fmt: skip
        assert proc.returncode == 0, f"{block.id}: {' '.join(args)}\n{proc.stderr[-3000:]}"
        for i, w in enumerate(run):
            if w in ("--output", "--save-frame"):
                produced = Path(run[i + 1] if w == "--output" else run[i + 2])
                assert (
                    produced.is_file() and produced.stat().st_size > 0
                ), f"{block.id}: no {produced}"
        _RAN[key] = True
