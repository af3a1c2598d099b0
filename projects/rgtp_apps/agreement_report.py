"""Outputs of the agreement report (:mod:`rgtp_apps.agreement`): strict JSON, Markdown tables and, per video, a plot
of the agreement over time with the frame types of every method marked."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rgtp.fileio import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["format_markdown", "plot_timeline", "write_report"]

#: Colours and legend names of the frame labels (rgtp_apps.agreement.FRAME_LABELS).
LABEL_STYLE = {
    "full": ("#222222", "full (first)"),
    "reset_period": ("#ff9f1c", "reset (period)"),
    "reset_cut": ("#d62728", "reset (cut)"),
    "pruned": ("#b9dcff", "pruned"),
    "dense": ("#cccccc", "dense"),
}
#: Colour, line style and width per method: the widths decrease so that coinciding curves stay visible.
METHOD_STYLE = {
    "pruned": ("tab:blue", "-", 4.0),
    "random": ("tab:red", "--", 2.4),
    "change": ("tab:green", "-", 1.2),
}


def _num(v: Optional[float], fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _types(ft: Dict[str, int]) -> str:
    if ft["dense"] and not (ft["full"] or ft["pruned"]):
        return f"{ft['dense']} dense"
    return f"{ft['full']} / {ft['reset_period']} / {ft['reset_cut']} / {ft['pruned']}"


def _table(head: Sequence[str], rows: List[Sequence[str]]) -> List[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _rows(report: Dict[str, Any], methods: Dict[str, Any], video: str = "") -> List[List[str]]:
    det = report["task"] == "detection"
    rows = []
    for name, r in methods.items():
        info = report["methods"][name]
        first = [video] if video else []
        first += [
            "dense (reference)" if name == "dense" else name,
            info["selection"],
            f"{info['kept_tokens']}/{info['tokens']}",
        ]
        if name == "dense":
            agree = ["—"] * (3 if det else 4)
        elif det:
            agree = [_num(r["ap50"]), _num(r["recovered"]), _num(r["mean_iou"])]
        else:
            clips = "/".join(
                _num(r[f"clip_{k}"], ".2f")
                for k in ("top1_agreement", "top5_overlap", "kl_divergence")
            )
            agree = [_num(r["top1_agreement"], ".2f"), _num(r["top5_overlap"], ".2f")]
            agree += [_num(r["kl_divergence"], ".4f"), clips]
        cost = f"{_num(r['gflops_paper'], '.4f')} / {_num(r['gflops_executed'], '.4f')}"
        ms = r["ms_per_frame"] if det else r["ms_per_video"]
        speed = "1.00×" if name == "dense" else f"{_num(r.get('speedup'), '.2f')}×"
        rows.append(first + agree + [cost, f"{ms:.1f}", speed, _types(r["frame_types"])])
    return rows


def _reasons(obj: Any, path: str = "") -> List[str]:
    out: List[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith("_reason") and isinstance(v, str):
                out.append(f"{k[: -len('_reason')]}: {v}")
            elif k != "timeline":
                out += _reasons(v, path)
    elif isinstance(obj, list):
        for v in obj:
            out += _reasons(v, path)
    return out


def format_markdown(report: Dict[str, Any]) -> str:
    """The overall table and the per-video table of a report, with the reasons of undefined values."""
    det = report["task"] == "detection"
    head = ["method", "selection", "kept/N"]
    if det:
        head += [
            "AP50 vs dense",
            "recovered",
            "mean IoU",
            "GFLOPs/frame paper / executed",
            "ms/frame",
        ]
    else:
        head += ["top-1 agreement", "top-5 overlap", "KL(dense‖·)", "clips: top-1/top-5/KL"]
        head += ["GFLOPs/video paper / executed", "ms/video"]
    head += [
        "speed-up",
        "full / reset (period) / reset (cut) / pruned" + (" frames" if det else " steps"),
    ]
    ov = report["overall"]
    ref = (
        f"pseudo ground truth: the dense detections with score ≥ {report['score_thresh']} "
        f"({ov['methods']['dense']['detections']} boxes)"
        if det
        else "reference: the dense model's class distribution"
    )
    lines = [
        f"# Agreement with the dense model ({report['task']})",
        "",
        f"Config `{os.path.relpath(report['config_file'])}`, {ov['videos']} video(s), {ov['frames']} frames, "
        f"{ref}; speed-up = dense model time / method model time, same run, device {report['device']}.",
        "",
        *_table(head, _rows(report, ov["methods"])),
        "",
        "Per video:",
        "",
        *_table(
            ["video"] + head,
            [r for e in report["videos"] for r in _rows(report, e["methods"], e["name"])],
        ),
    ]
    notes = list(dict.fromkeys(_reasons(report["overall"]) + _reasons(report["videos"])))
    if notes:
        lines += ["", "n/a: " + "; ".join(notes) + "."]
    for name, why in report.get("skipped_methods", {}).items():
        lines += ["", f"Skipped `{name}`: {why}."]
    for s in report.get("skipped_videos", []):
        lines += ["", f"Skipped video `{s['video']}`: {s['error']}."]
    for e in report["videos"]:
        if e.get("problem"):
            lines += ["", f"Warning, `{e['video']}`: {e['problem']}."]
    return "\n".join(lines) + "\n"


def _spans(labels: Sequence[str]) -> List[Tuple[int, int, str]]:
    out: List[Tuple[int, int, str]] = []
    for i, lab in enumerate(labels):
        if out and out[-1][2] == lab:
            out[-1] = (out[-1][0], i + 1, lab)
        else:
            out.append((i, i + 1, lab))
    return out


def plot_timeline(
    path: str,
    title: str,
    panels: Sequence[Tuple[str, Dict[str, List[Optional[float]]], Optional[Tuple[float, float]]]],
    strips: Dict[str, List[str]],
    clips: Optional[Sequence[Sequence[int]]] = None,
    xlabel: str = "frame",
) -> None:
    """Per-frame agreement curves (one panel per measure, one line per method; None = a gap) above one strip per
    method with its frame types; marks the reset frames of the pruned method in every panel. With ``clips``
    (``[start, stop)`` frame ranges) the series hold one value per clip, drawn as steps over the clip's frames,
    with the clip boundaries marked. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    n = max((len(v) for v in strips.values()), default=0)
    ratios = [3.0] * len(panels) + [0.45 * len(strips) + 0.2]
    fig, axes = plt.subplots(
        len(panels) + 1,
        1,
        figsize=(11, 2.3 * len(panels) + 0.6 * len(strips) + 1.3),
        sharex=True,
        gridspec_kw={"height_ratios": ratios},
    )
    resets = [(s, lab) for s, _, lab in _spans(strips.get("pruned", [])) if lab.startswith("reset")]
    for ax, (ylabel, series, ylim) in zip(axes, panels):
        for s, lab in resets:
            ax.axvline(s, color=LABEL_STYLE[lab][0], lw=1.2, alpha=0.7, zorder=0)
        for s, _ in clips or []:
            ax.axvline(s - 0.5, color="0.6", lw=0.8, ls=":", zorder=0)
        for name, values in series.items():
            color, style, lw = METHOD_STYLE.get(name, ("tab:purple", ":", 1.6))
            y = [math.nan if v is None else v for v in values]
            if clips:
                x = [c[0] - 0.5 for c in clips] + [clips[-1][1] - 0.5]
                ax.stairs(y, x, color=color, ls=style, lw=lw, label=name, baseline=None)
            else:
                ax.plot(range(len(y)), y, style, color=color, lw=lw, marker="o", ms=3, label=name)
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", ncol=len(panels[0][1]) or 1, fontsize=9, framealpha=0.9)
    axes[0].set_title(title, fontsize=11)
    strip = axes[-1]
    present: List[str] = []
    for row, labels in enumerate(strips.values()):
        for s, e, lab in _spans(labels):
            strip.broken_barh([(s - 0.5, e - s)], (row - 0.4, 0.8), color=LABEL_STYLE[lab][0])
            if lab not in present:
                present.append(lab)
    strip.set_yticks(range(len(strips)), list(strips))
    strip.set_ylim(len(strips) - 0.5, -0.5)
    strip.set_xlim(-0.5, max(n, 1) - 0.5)
    strip.set_xlabel(xlabel)
    strip.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [
        Patch(color=LABEL_STYLE[k][0], label=LABEL_STYLE[k][1]) for k in LABEL_STYLE if k in present
    ]
    strip.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.9 / max(1, len(strips))),
        ncol=len(handles),
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def _plot_video(report: Dict[str, Any], e: Dict[str, Any], path: str) -> None:
    t = e["timeline"]
    strips = {k: v for k, v in t["frame_type"].items() if k != "dense"}
    title = (
        f"{e['name']}: agreement with the dense model ({os.path.basename(report['config_file'])})"
    )
    if report["task"] == "detection":
        thr = report["score_thresh"]
        panels = [
            (f"dense dets (≥{thr}) recovered", t["recovered"], (-0.05, 1.05)),
            ("mean IoU of matches", t["mean_iou"], (0.45, 1.02)),
        ]
    else:
        panels = [
            (name, t[key], lim)
            for name, key, lim in (
                ("top-1 agreement", "top1_agreement", (-0.05, 1.05)),
                ("top-5 overlap", "top5_overlap", (-0.05, 1.05)),
                ("KL(dense‖·) [nats]", "kl_divergence", None),
            )
        ]
        title += f", clips of {t['clips'][0][1] - t['clips'][0][0]} frames"
        fps = report.get("target_fps")
        xlabel = f"frame (resampled to {fps:g} fps)" if fps else "frame"
        plot_timeline(path, title, panels, strips, clips=t["clips"], xlabel=xlabel)
        return
    plot_timeline(path, title, panels, strips)


def write_report(report: Dict[str, Any], output: str, plots: bool = True) -> None:
    """Write ``agreement.json``, ``agreement.md`` and the per-video plots to the folder ``output``; the paths are
    added to ``report["outputs"]``."""
    os.makedirs(output, exist_ok=True)
    outputs: Dict[str, Any] = {
        "json": os.path.join(output, "agreement.json"),
        "markdown": os.path.join(output, "agreement.md"),
        "plots": [],
    }
    if plots:
        for i, e in enumerate(report["videos"]):
            p = os.path.join(output, f"agreement_{i}_{e['name']}.png")
            _plot_video(report, e, p)
            e["plot"] = p
            outputs["plots"].append(p)
    report["outputs"] = outputs
    atomic_write_text(format_markdown(report), outputs["markdown"])
    atomic_write_json(report, outputs["json"])
