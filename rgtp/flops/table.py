"""The paper-table report of ``tools/count_flops.py --paper-table``: for every row of the paper's four tables the
published number, our closed forms in both conventions and, where the models are available, the counts measured
by running them on ``meta`` (ViTDet: :class:`rgtp.vit.PrunedViT`; ViViT: the core :class:`rgtp.cls_vit.ClsViT`
spatial and temporal models, or a whole recogniser the caller passes, e.g. ``rgtp_vivit.flops.video_flops``; the
core never imports the projects)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..counting import FlopCounter
from ..fileio import atomic_write_json
from .measure import (
    build_pruned_vit,
    summarize_measured,
    vitdet_frame_flops_measured,
    vivit_frame_flops_measured,
    vivit_temporal_flops_measured,
)
from .paper import (
    PAPER_ROWS,
    VID_VAL_FULL_FRAME_FRACTION,
    PaperRow,
    row_flops,
    row_frame_flops,
    row_kept,
    schedule_average,
)
from .vivit import ViViTSpec, vivit_step_types, vivit_video_flops

#: Counts one video of a paper row with a whole recogniser (e.g. ``rgtp_vivit.flops.video_flops`` of its config).
ProjectCounter = Callable[[PaperRow], FlopCounter]


@dataclass
class RowResult:
    """Everything the report says about one paper row (numbers in the row's unit, G or T)."""

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
    ``tests/test_flops.py`` checks the full 9-frame schedule on fresh models. On ``meta`` the model takes the
    kept-query windowed attention, the path :data:`rgtp.flops.EXECUTED` describes.
    """
    spec = row.spec
    cfg = row.cfg.replace(reset_period=2) if row.cfg is not None else None
    net = _NETS.get(row.table)
    if net is None:
        net = _NETS[row.table] = build_pruned_vit(spec, None)
    net.rgtp = cfg
    frames = summarize_measured(vitdet_frame_flops_measured(spec, cfg, net=net))
    return {key: (fr.paper, fr.executed) for key, fr in frames.items()}


def measure_vivit_core(row: PaperRow) -> Tuple[int, int]:
    """(paper, executed) FLOPs of one video of a ViViT row counted with the core models on ``meta``.

    The spatial model (:class:`rgtp.cls_vit.ClsViT` with the row's RGTP settings) runs a first, a pruned and a
    reset step (reset period 2: per-step counts depend only on the step type); the temporal model and classifier
    run once; both are combined with the row's real schedule (16 steps, reset period 8 or 4) and 12 views.
    """
    spec = row.spec
    cfg = row.cfg
    short = cfg.replace(reset_period=2) if cfg is not None else None
    frames = vivit_frame_flops_measured(spec, short, num_steps=1 if cfg is None else 3)
    temporal = vivit_temporal_flops_measured(spec)
    totals = []
    for i, conv in enumerate(("paper", "executed")):
        steps = {fr.frame_type: getattr(fr, conv) for fr in frames}
        per_view = sum(n * steps[ft] for ft, n in vivit_step_types(spec, cfg).items()) + temporal[i]
        totals.append(per_view * spec.views)
    return totals[0], totals[1]


def measure_vivit(
    row: PaperRow, project: Optional[ProjectCounter] = None
) -> Tuple[Tuple[int, int], str]:
    """(paper, executed) FLOPs of one video (12 views) of a ViViT row, and a note on how it was measured.

    With ``project``: the whole recogniser, counted by that callable (``tools/count_flops.py --vivit-project``
    passes ``rgtp_vivit.flops.video_flops`` on the row's config file; about 2 s per row on ``meta``; the core
    never imports the projects), falling back to the core models with a note when it fails. Otherwise the core
    models (:func:`measure_vivit_core`, the same ``ClsViT`` the recogniser is built from; a fraction of a second).
    """
    reason = ""
    if project is not None:
        try:
            counter = project(row)
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
# One row
# -----------------------------------------------------------------------------------------------------------------


def evaluate_row(
    row: PaperRow, measure: bool = True, vivit_project: Optional[ProjectCounter] = None
) -> RowResult:
    """Closed forms (and measured counts when ``measure``) of one paper row; ``vivit_project`` counts ViViT rows
    with the whole recogniser (:func:`measure_vivit`) instead of the core models."""
    scale = 1e9 if row.unit == "G" else 1e12
    res = RowResult(
        table=row.table,
        config=row.config,
        unit=row.unit,
        kept=row_kept(row),
        published=row.published,
        decimals=row.decimals,
        official=row.official,
        closed_paper=row_flops(row, "paper"),
        closed_executed=row_flops(row, "executed"),
    )
    res.reproduces = round(res.closed_paper, row.decimals) == row.published
    res.known_mismatch = row.known_mismatch
    if row.note:
        res.notes.append(row.note)
    spec = row.spec
    if isinstance(spec, ViViTSpec) and spec.noun_classes:
        extra = spec.views * (spec.embed_dim + 1) * spec.noun_classes
        res.notes.append(
            f"both counts include the {spec.noun_classes}-class noun head our recogniser keeps and the official "
            f"model discards (+{extra:,} FLOPs per video, below the printed precision)"
        )
    if row.is_vitdet:
        cp = row_frame_flops(row, "paper")
        ce = row_frame_flops(row, "executed")
        for key in cp:
            res.frames[key] = {
                "official": row.official_full if key == "full" else row.official_pruned,
                "closed_paper": cp[key] / scale,
                "closed_executed": ce[key] / scale,
            }
    if not measure:
        return res
    if row.is_vitdet:
        _measure_vitdet_row(row, res, scale)
    else:
        _measure_vivit_row(row, res, scale, vivit_project)
    return res


def _measure_vitdet_row(row: PaperRow, res: RowResult, scale: float) -> None:
    try:
        measured = measure_vitdet(row)
    except ImportError as exc:
        res.notes.append(f"ViTDet measured count unavailable ({exc}); closed form only")
        return
    agrees = True
    for key, closed_key in (("first", "full"), ("reset", "full"), ("pruned", "pruned")):
        if key not in measured:
            continue
        mp, me = measured[key]
        cpk = row_frame_flops(row, "paper")[closed_key]
        cek = row_frame_flops(row, "executed")[closed_key]
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
        res.measured_paper = schedule_average(fp, pp) / scale
        res.measured_executed = schedule_average(fe, pe) / scale
    else:
        res.measured_paper, res.measured_executed = fp / scale, fe / scale
    res.measured_agrees = agrees


def _measure_vivit_row(
    row: PaperRow, res: RowResult, scale: float, project: Optional[ProjectCounter]
) -> None:
    try:
        (mp, me), note = measure_vivit(row, project)
    except ImportError as exc:
        res.notes.append(f"ViViT measured count unavailable ({exc}); closed form only")
        return
    if note:
        res.notes.append(note)
    res.measured_paper, res.measured_executed = mp / scale, me / scale
    cp = vivit_video_flops(row.spec, row.cfg, "paper").total
    ce = vivit_video_flops(row.spec, row.cfg, "executed").total
    res.measured_agrees = (mp, me) == (cp, ce)
    if not res.measured_agrees:
        res.notes.append(
            f"measured {mp}/{me} vs closed form {cp}/{ce} FLOPs per video (paper/executed), "
            f"difference {mp - cp}/{me - ce}"
        )


# -----------------------------------------------------------------------------------------------------------------
# The report
# -----------------------------------------------------------------------------------------------------------------


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _grid(head: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows]
    )


def _check_label(r: RowResult) -> str:
    check = "ok" if r.reproduces else ("documented mismatch" if r.known_mismatch else "MISMATCH")
    if r.measured_agrees is False:
        check += ", measured != closed"
    elif r.measured_agrees is None:
        check += ", not measured"
    return check


def format_table(results: List[RowResult]) -> str:
    """A plain-text table of the results, one line per paper row, then the ViTDet per-frame values and notes."""
    head = ["table", "config", "K", "unit", "paper"]
    head += ["ours paper", "ours exec", "meas paper", "meas exec", "check"]
    lines = [
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
            _check_label(r),
        ]
        for r in results
    ]
    out = [_grid(head, lines)]

    fhead = ["table", "config", "frame", "official"]
    fhead += ["ours paper", "ours exec", "meas paper", "meas exec"]
    keys = ("official", "closed_paper", "closed_executed", "measured_paper", "measured_executed")
    flines = [
        [r.table, r.config, key] + [_fmt(v.get(k)) for k in keys]
        for r in results
        for key, v in r.frames.items()
    ]
    if flines:
        out.append(
            "\nViTDet per-frame GFLOPs (official = docs/method.md §5.2, from running the official code):"
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


def write_json(results: List[RowResult], path: str) -> None:
    """Write the results as JSON to ``path`` atomically (temporary file, then rename)."""
    payload = {
        "full_frame_fraction": VID_VAL_FULL_FRAME_FRACTION,
        "rows": [r.__dict__ for r in results],
    }
    atomic_write_json(payload, path, allow_nan=True)


def failed_rows(results: Sequence[RowResult]) -> List[RowResult]:
    """Rows whose closed form misses the published number (other than the documented keep_0215) or whose measured
    count differs from its closed form."""
    return [
        r
        for r in results
        if (not r.reproduces and not r.known_mismatch) or r.measured_agrees is False
    ]


def paper_table(
    tables: Optional[Sequence[str]] = None,
    measure: bool = True,
    vivit_project: Optional[ProjectCounter] = None,
    json_path: Optional[str] = None,
    check: bool = False,
) -> int:
    """Print the paper-table report (and write it as JSON to ``json_path``); returns the exit status.

    Args:
        tables: restrict to these tables (``vitdet672``, ``vitdet1024``, ``kinetics``, ``epic``); None for all.
        measure: also count by running the models on ``meta`` (else closed forms only).
        vivit_project: counts one video of a ViViT row with the whole recogniser (a :class:`FlopCounter`), used
            instead of the core models (:func:`measure_vivit`).
        json_path: where to write the results as JSON, if anywhere.
        check: return 1 when a row fails (:func:`failed_rows`).

    Returns:
        0, or 1 when ``check`` finds a failing row.
    """
    rows = [r for r in PAPER_ROWS if not tables or r.table in tables]
    start = time.perf_counter()
    results = [evaluate_row(r, measure, vivit_project) for r in rows]
    print(format_table(results))
    print(f"\n{len(results)} rows in {time.perf_counter() - start:.1f} s")
    if json_path:
        write_json(results, json_path)
        print(f"wrote {json_path}")
    if check:
        bad = failed_rows(results)
        if bad:
            print(
                f"check failed for: {', '.join(f'{r.table}/{r.config}' for r in bad)}",
                file=sys.stderr,
            )
            return 1
    return 0
