#!/usr/bin/env python
"""Print the FLOPs of every row of the paper's four result tables (method.md §5).

For each row: the paper's number, our paper-convention number and our executed number, each as a closed form
(:mod:`rgtp.flops`) and, where the model is available, as measured by running it on the ``meta`` device
(ViTDet: :class:`rgtp.vit.PrunedViT`; ViViT: the core :class:`rgtp.cls_vit.ClsViT` spatial and temporal models,
or with ``--vivit-project`` the whole recogniser through ``rgtp_vivit.flops.video_flops``). ViTDet numbers are
GFLOPs per frame averaged over ImageNet-VID val (full-frame fraction f = 0.12654); ViViT numbers are TFLOPs per
video (12 views). See docs/flops.md.

    python tools/count_flops.py --paper-table
    python tools/count_flops.py --paper-table --json flops.json
    python tools/count_flops.py --paper-table --no-measure      # closed forms only
    python tools/count_flops.py --paper-table --vivit-project   # ViViT via rgtp_vivit (slower)
    python tools/count_flops.py --paper-table --check           # exit 1 on any disagreement
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from rgtp import flops
from rgtp.flops import PaperRow

REPO = Path(__file__).resolve().parents[1]


@dataclass
class RowResult:
    """Everything the tool reports about one paper row (numbers in the row's unit, G or T)."""

    table: str
    config: str
    unit: str
    kept: Optional[int]
    published: float
    decimals: int
    official: Optional[float]
    closed_paper: float
    closed_executed: float
    measured_paper: Optional[float] = None
    measured_executed: Optional[float] = None
    frames: Dict[str, Dict[str, Optional[float]]] = field(default_factory=dict)
    reproduces: bool = False
    known_mismatch: bool = False
    measured_agrees: Optional[bool] = None
    notes: List[str] = field(default_factory=list)


# -----------------------------------------------------------------------------------------------------------------
# Measuring
# -----------------------------------------------------------------------------------------------------------------


_NETS: Dict[str, Any] = {}


def measure_vitdet(row: PaperRow) -> Dict[str, Tuple[int, int]]:
    """Per-frame (paper, executed) FLOPs of a ViTDet row measured on ``meta``: keys first, reset, pruned.

    The count of a frame depends only on its type, so the stream runs with reset period 2 (first, pruned, reset)
    instead of 8, and one model per canvas is reused across rows (its ``rgtp`` settings swapped) to stay fast;
    ``tests/test_flops.py`` checks the full 9-frame schedule on fresh models.
    """
    spec = row.spec
    cfg = row.cfg.replace(reset_period=2) if row.cfg is not None else None
    net = _NETS.get(row.table)
    if net is None:
        net = _NETS[row.table] = flops.build_pruned_vit(spec, None)
    net.rgtp = cfg
    frames = flops.summarize_measured(flops.vitdet_frame_flops_measured(spec, cfg, net=net))
    return {key: (fr.paper, fr.executed) for key, fr in frames.items()}


def _vivit_video_flops_fn():
    """``rgtp_vivit.flops.video_flops``, imported lazily (another package, maybe not written yet)."""
    from rgtp_vivit.flops import video_flops

    return video_flops


def _vivit_cfg(row: PaperRow) -> Any:
    """The project config of a ViViT row, loaded from ``configs/<kinetics|epic>/<name>.yaml``."""
    path = (
        REPO / "configs" / row.table / f"{'base' if row.config == 'baseline' else row.config}.yaml"
    )
    if not path.is_file():
        raise FileNotFoundError(f"no config file {path.relative_to(REPO)}")
    import rgtp_vivit.config as vcfg

    return vcfg.load_config(vcfg.parse_args(["--cfg", str(path)]))


def measure_vivit_core(row: PaperRow) -> Tuple[int, int]:
    """(paper, executed) FLOPs of one video of a ViViT row counted with the core models on ``meta``.

    The spatial model (:class:`rgtp.cls_vit.ClsViT` with the row's RGTP settings) runs a first, a pruned and a
    reset step (reset period 2: per-step counts depend only on the step type); the temporal model and classifier
    run once; both are combined with the row's real schedule (16 steps, reset period 8 or 4) and 12 views.
    """
    spec = row.spec
    cfg = row.cfg
    short = cfg.replace(reset_period=2) if cfg is not None else None
    frames = flops.vivit_frame_flops_measured(spec, short, num_steps=1 if cfg is None else 3)
    temporal = flops.vivit_temporal_flops_measured(spec)
    totals = []
    for i, conv in enumerate(("paper", "executed")):
        steps = {fr.frame_type: getattr(fr, conv) for fr in frames}
        per_view = (
            sum(n * steps[ft] for ft, n in flops.vivit_step_types(spec, cfg).items()) + temporal[i]
        )
        totals.append(per_view * spec.views)
    return totals[0], totals[1]


def measure_vivit(row: PaperRow, project: bool = False) -> Tuple[Tuple[int, int], str]:
    """(paper, executed) FLOPs of one video (12 views) of a ViViT row, and a note on how it was measured.

    With ``project``: the whole recogniser, ``rgtp_vivit.flops.video_flops`` on the row's config file (about 2 s
    per row on ``meta``), falling back to the core models with a note when that is unavailable. Otherwise the core
    models (:func:`measure_vivit_core`, the same ``ClsViT`` the recogniser is built from; a fraction of a second).
    """
    reason = ""
    if project:
        try:
            video_flops = _vivit_video_flops_fn()
            counter = video_flops(_vivit_cfg(row))
            return (
                counter.paper.total,
                counter.executed.total,
            ), "measured with rgtp_vivit.flops.video_flops"
        except Exception as exc:  # the ViViT package is optional here: fall back to the core models
            reason = f"rgtp_vivit.flops.video_flops unavailable ({type(exc).__name__}: {exc}); "
    return (
        measure_vivit_core(row),
        reason + "measured with the core ClsViT spatial + temporal models",
    )


# -----------------------------------------------------------------------------------------------------------------
# The table
# -----------------------------------------------------------------------------------------------------------------


def evaluate_row(row: PaperRow, measure: bool = True, vivit_project: bool = False) -> RowResult:
    """Closed forms (and measured counts when ``measure``) of one paper row; ``vivit_project`` measures ViViT
    rows with the whole recogniser of ``rgtp_vivit`` instead of the core models."""
    scale = 1e9 if row.unit == "G" else 1e12
    res = RowResult(
        table=row.table,
        config=row.config,
        unit=row.unit,
        kept=flops.row_kept(row),
        published=row.published,
        decimals=row.decimals,
        official=row.official,
        closed_paper=flops.row_flops(row, "paper"),
        closed_executed=flops.row_flops(row, "executed"),
    )
    res.reproduces = round(res.closed_paper, row.decimals) == row.published
    res.known_mismatch = row.known_mismatch
    if row.note:
        res.notes.append(row.note)
    spec = row.spec
    if isinstance(spec, flops.ViViTSpec) and spec.noun_classes:
        extra = spec.views * (spec.embed_dim + 1) * spec.noun_classes
        res.notes.append(
            f"both counts include the {spec.noun_classes}-class noun head our recogniser keeps and the official "
            f"model discards (+{extra:,} FLOPs per video, below the printed precision)"
        )
    if row.is_vitdet:
        cp = flops.row_frame_flops(row, "paper")
        ce = flops.row_frame_flops(row, "executed")
        for key in cp:
            res.frames[key] = {
                "official": row.official_full if key == "full" else row.official_pruned,
                "closed_paper": cp[key] / scale,
                "closed_executed": ce[key] / scale,
            }
    if not measure:
        return res
    if row.is_vitdet:
        try:
            measured = measure_vitdet(row)
        except ImportError as exc:
            res.notes.append(f"ViTDet measured count unavailable ({exc}); closed form only")
            return res
        agrees = True
        for key, closed_key in (("first", "full"), ("reset", "full"), ("pruned", "pruned")):
            if key not in measured:
                continue
            mp, me = measured[key]
            cpk = flops.row_frame_flops(row, "paper")[closed_key]
            cek = flops.row_frame_flops(row, "executed")[closed_key]
            if (mp, me) != (cpk, cek):
                agrees = False
                res.notes.append(
                    f"{key} frame measured {mp}/{me} vs closed form {cpk}/{cek} FLOPs (paper/executed), "
                    f"difference {mp - cpk}/{me - cek}"
                )
            entry = res.frames.setdefault(closed_key, {})
            entry.setdefault("measured_paper", mp / scale)
            entry.setdefault("measured_executed", me / scale)
        fp, fe = measured["first"]
        if "pruned" in measured:
            pp, pe = measured["pruned"]
            res.measured_paper = flops.schedule_average(fp, pp) / scale
            res.measured_executed = flops.schedule_average(fe, pe) / scale
        else:
            res.measured_paper, res.measured_executed = fp / scale, fe / scale
        res.measured_agrees = agrees
    else:
        try:
            (mp, me), note = measure_vivit(row, vivit_project)
        except ImportError as exc:
            res.notes.append(f"ViViT measured count unavailable ({exc}); closed form only")
            return res
        if note:
            res.notes.append(note)
        res.measured_paper, res.measured_executed = mp / scale, me / scale
        cp = flops.vivit_video_flops(row.spec, row.cfg, "paper").total
        ce = flops.vivit_video_flops(row.spec, row.cfg, "executed").total
        res.measured_agrees = (mp, me) == (cp, ce)
        if not res.measured_agrees:
            res.notes.append(
                f"measured {mp}/{me} vs closed form {cp}/{ce} FLOPs per video (paper/executed), "
                f"difference {mp - cp}/{me - ce}"
            )
    return res


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_table(results: List[RowResult]) -> str:
    """A plain-text table of the results, one line per paper row, then the ViTDet per-frame values and notes."""
    head = [
        "table",
        "config",
        "K",
        "unit",
        "paper",
        "ours paper",
        "ours exec",
        "meas paper",
        "meas exec",
        "check",
    ]
    lines = []
    for r in results:
        check = (
            "ok" if r.reproduces else ("documented mismatch" if r.known_mismatch else "MISMATCH")
        )
        if r.measured_agrees is False:
            check += ", measured != closed"
        elif r.measured_agrees is None:
            check += ", not measured"
        lines.append(
            [
                r.table,
                r.config,
                "-" if r.kept is None else str(r.kept),
                f"{r.unit}FLOPs",
                f"{r.published:.{r.decimals}f}",
                _fmt(r.closed_paper),
                _fmt(r.closed_executed),
                _fmt(r.measured_paper),
                _fmt(r.measured_executed),
                check,
            ]
        )
    out = [_grid(head, lines)]

    fhead = [
        "table",
        "config",
        "frame",
        "official",
        "ours paper",
        "ours exec",
        "meas paper",
        "meas exec",
    ]
    flines = []
    for r in results:
        for key, v in r.frames.items():
            flines.append(
                [
                    r.table,
                    r.config,
                    key,
                    _fmt(v.get("official")),
                    _fmt(v.get("closed_paper")),
                    _fmt(v.get("closed_executed")),
                    _fmt(v.get("measured_paper")),
                    _fmt(v.get("measured_executed")),
                ]
            )
    if flines:
        out.append(
            "\nViTDet per-frame GFLOPs (official = method.md §5.2, from running the official code):"
        )
        out.append(_grid(fhead, flines))
    grouped: Dict[str, List[str]] = {}
    for r in results:
        for n in r.notes:
            grouped.setdefault(n, []).append(f"{r.table}/{r.config}")
    if grouped:
        out.append("\nNotes:")
        out.extend(f"- {', '.join(rows)}: {n}" for n, rows in grouped.items())
    return "\n".join(out)


def _grid(head: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows]
    )


def write_json(results: List[RowResult], path: str) -> None:
    """Write the results as JSON to ``path`` atomically (temporary file, then rename)."""
    payload = {
        "full_frame_fraction": flops.VID_VAL_FULL_FRAME_FRACTION,
        "rows": [r.__dict__ for r in results],
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--paper-table", action="store_true", help="every row of the paper's four tables"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--no-measure", action="store_true", help="closed forms only (do not run the models)"
    )
    parser.add_argument(
        "--vivit-project",
        action="store_true",
        help="measure ViViT rows with rgtp_vivit.flops.video_flops on configs/{kinetics,epic}/*.yaml (the whole "
        "recogniser, ~2 s per row) instead of the core ClsViT models",
    )
    parser.add_argument(
        "--table",
        choices=("vitdet672", "vitdet1024", "kinetics", "epic"),
        action="append",
        help="restrict rows",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a closed form misses a published number (other than the documented keep_0215) or a "
        "measured count differs from its closed form",
    )
    args = parser.parse_args(argv)
    if not args.paper_table:
        parser.print_help()
        return 2
    rows = [r for r in flops.PAPER_ROWS if not args.table or r.table in args.table]
    start = time.perf_counter()
    results = [evaluate_row(r, not args.no_measure, args.vivit_project) for r in rows]
    print(format_table(results))
    print(f"\n{len(results)} rows in {time.perf_counter() - start:.1f} s")
    if args.json:
        write_json(results, args.json)
        print(f"wrote {args.json}")
    if args.check:
        bad = [
            r
            for r in results
            if (not r.reproduces and not r.known_mismatch) or r.measured_agrees is False
        ]
        if bad:
            print(
                f"check failed for: {', '.join(f'{r.table}/{r.config}' for r in bad)}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
