"""Accuracy against compute: the trade-off plot of evaluated RGTP configs, with the paper's points as reference.

Inputs are the evaluators' result JSONs (detection: ``tools/train_net.py --eval-only`` writes
``OUTPUT_DIR/inference/results_<split>.json`` with ``bbox.AP50``, the paper's mAP50, and backbone GFLOPs per frame;
recognition: ``tools/vivit_net.py`` writes ``OUTPUT_DIR/results.json`` with ``top1`` and TFLOPs per video) and the
demo harness's ``demo_results.json`` (``tools/demo.py``; :func:`plot_demo` draws its rows directly).

**Panels are chosen by what the results are**: one per (task, data set, model). The data set is the demo data when
the result's path or split says ``demo``, else ImageNet VID / Kinetics-400 / EPIC-Kitchens-100. The model comes from
the run's config: ``OUTPUT_DIR/config.yaml`` (detectron2's ``default_setup`` writes it) or the ``config_file`` of a
demo row; without one it is taken to be the paper's model (ViTDet-B at 672, or 1024 for ``res1024*`` configs;
ViViT-B) only when the dense-equivalent FLOPs fit that model, else it is "unknown". The paper's published curve is
drawn only beside results of the same data set *and* model (``reference="auto"``), or alone (:func:`paper_points`).

**Series**: RGTP (rollout selection; its line starts at the dense point), and the baselines as their own series:
random selection and change-based selection (``SELECTION random`` / ``change``; from the config, else from a config
name holding ``random`` / ``change``). Configs that differ in another way (e.g. ``*_no_ft``) are their own series.

**Axes**: the x axis starts at 0; the y axis shows at least 10 points of accuracy and, when it does not start at
0, carries a break mark on its spine (``y_full=True``: 0 to 100). Each panel's title gives the sample size (frames
or videos; for top-1, what one video is worth in points). Labels are placed so that no two overlap and none covers
a marker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

logger = logging.getLogger("rgtp.plot_tradeoff")

__all__ = [
    "Point",
    "PlotError",
    "find_results",
    "read_points",
    "read_point",
    "paper_points",
    "demo_points",
    "select_reference",
    "plot",
    "plot_demo",
    "PAPER_PANELS",
]

#: The paper's tables: (task, data set, model) of each.
PAPER_PANELS: Dict[str, Tuple[str, str, str]] = {
    "vitdet672": ("detection", "ImageNet VID", "ViTDet-B, 672"),
    "vitdet1024": ("detection", "ImageNet VID", "ViTDet-B, 1024"),
    "kinetics": ("recognition", "Kinetics-400", "ViViT-B"),
    "epic": ("recognition", "EPIC-Kitchens-100 (verbs)", "ViViT-B"),
}
#: Dense (baseline) FLOPs of the paper's models under the paper's convention: GFLOPs per frame / per video.
_PAPER_DENSE_G = {"vitdet672": 174.5, "vitdet1024": 467.4, "kinetics": 3360.0, "epic": 7120.0}
_METRIC = {"detection": "mAP50 (%)", "recognition": "top-1 (%)"}
_SELECTIONS = ("dense", "rollout", "random", "change")


class PlotError(RuntimeError):
    """A result file cannot be used, or there is nothing to plot; the message names the file."""


@dataclass
class Point:
    """One evaluated (or published) configuration.

    ``flops`` is in GFLOPs, per frame (detection) or per video (recognition); ``accuracy`` in %. ``panel`` is
    (task, data set, model); ``table`` the paper table of that panel (None when the results are not comparable to
    the paper's); ``series`` the legend entry; ``samples`` the sample size text, ``per_sample`` the points one
    sample is worth (top-1: 100 / videos; 0 when not meaningful).
    """

    label: str
    flops: float
    accuracy: float
    task: str
    dataset: str
    model: str
    selection: str = "rollout"
    variant: str = ""
    samples: str = ""
    per_sample: float = 0.0
    table: Optional[str] = None
    path: str = ""
    paper: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def panel(self) -> Tuple[str, str, str]:
        return (self.task, self.dataset, self.model)

    @property
    def series(self) -> str:
        if self.paper:
            return "paper (published)"
        name = {
            "dense": "RGTP",
            "rollout": "RGTP",
            "random": "random tokens (baseline)",
            "change": "change-based tokens (baseline)",
        }.get(self.selection, self.selection)
        return f"{name}, {self.variant}" if self.variant else name


# ------------------------------------------------------------------------------------------------ reading
def find_results(paths: Sequence[str]) -> List[str]:
    """Result files among ``paths``: files as given; folders searched recursively for ``results*.json`` and
    ``demo_results.json`` (a folder holding a ``demo_results.json`` contributes that file only: the per-config
    results below it are the same runs)."""
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            demo_roots: List[str] = []
            for root, dirs, files in sorted(os.walk(p)):
                dirs.sort()
                if any(root == d or root.startswith(d + os.sep) for d in demo_roots):
                    continue
                if "demo_results.json" in files:
                    demo_roots.append(root)
                    out.append(os.path.join(root, "demo_results.json"))
                    continue
                out += [
                    os.path.join(root, f)
                    for f in sorted(files)
                    if f.startswith("results") and f.endswith(".json")
                ]
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise PlotError(f"result path {p!r} does not exist")
    return out


def _yaml_chain(path: str, depth: int = 0) -> Dict[str, Any]:
    """A YAML config merged with its ``_BASE_`` chain (nested dicts; later files win)."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    base = data.pop("_BASE_", None)
    merged: Dict[str, Any] = {}
    if isinstance(base, str) and depth < 8:
        merged = _yaml_chain(os.path.join(os.path.dirname(path), base), depth + 1)

    def merge(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
        for k, v in b.items():
            a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, dict) else v
        return a

    return merge(merged, data)


def _get(cfg: Dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _describe_config(
    cfg: Dict[str, Any], task: str
) -> Tuple[str, Optional[str], Optional[str], bool]:
    """(model, paper table or None, selection or None, demo data?) of a config dict."""
    if task == "detection":
        e, d = _get(cfg, "MODEL.VIT.EMBED_DIM", 768), _get(cfg, "MODEL.VIT.DEPTH", 12)
        size = int(_get(cfg, "MODEL.VIT.INPUT_SIZE", _get(cfg, "MODEL.VIT.IMG_SIZE", 1024)))
        base = e == 768 and d == 12
        model = f"ViTDet-B, {size}" if base else f"ViTDet, embed {e}, {d} blocks, {size} px"
        table = f"vitdet{size}" if base and size in (672, 1024) else None
        enabled = _get(cfg, "MODEL.RGTP.ENABLED", True)
        selection = str(_get(cfg, "MODEL.RGTP.SELECTION", "rollout")) if enabled else "dense"
        data = " ".join(str(x) for x in (_get(cfg, "DATASETS.TEST", ()) or ()))
    else:
        e = _get(cfg, "VIVIT.EMBED_DIM", 768)
        s, t = _get(cfg, "VIVIT.SPATIAL_DEPTH", 12), _get(cfg, "VIVIT.TEMPORAL_DEPTH", 4)
        base = e == 768 and s == 12
        model = "ViViT-B" if base else f"ViViT, embed {e}, {s}+{t} blocks"
        data = str(_get(cfg, "DATA.PATH_TO_DATA_DIR", ""))
        table = None
        if base:
            table = "epic" if "epic" in data.lower() else "kinetics"
        selection = (
            str(_get(cfg, "RGTP.SELECTION", "rollout"))
            if _get(cfg, "RGTP.ENABLE", True)
            else "dense"
        )
    demo = "demo" in data.lower()
    return model, (None if demo else table), selection, demo


def _selection_from_label(label: str) -> str:
    low = label.lower()
    if "random" in low:
        return "random"
    if "change" in low:
        return "change"
    if low in ("dense", "base", "baseline") or low.endswith("_base") or low.startswith("base"):
        return "dense"
    return "rollout"


def _variant(label: str) -> str:
    """What distinguishes a config from the plain RGTP / baseline series: ``rgtp_keep14_no_ft`` -> ``no ft``."""
    rest = re.sub(r"(^|_)(rgtp|random|change|res\d+)(?=_|$)", "_", label.lower())
    rest = re.sub(r"(^|_)keep[_\d.]*\d(?=_|$)", "_", rest)
    rest = re.sub(r"(^|_)(fg|bg)_?\d+(s\d+)?(?=_|$)", "_", rest)
    words = [w for w in rest.split("_") if w and w not in ("dense", "base", "baseline")]
    text = " ".join(words)
    known = {
        "no ft": "no fine-tune",
        "ft": "fine-tuned",
        "wo ft": "no fine-tune",
        "cuts": "cut-aware resets",
    }
    return known.get(text, text)


def _run_config(path: str) -> Optional[Dict[str, Any]]:
    """The config the run dumped beside its results (``OUTPUT_DIR/config.yaml``), if any."""
    folder = os.path.dirname(os.path.abspath(path))
    for cand in (folder, os.path.dirname(folder)):
        f = os.path.join(cand, "config.yaml")
        if os.path.isfile(f):
            cfg = _yaml_chain(f)
            if cfg:
                return cfg
    return None


def _config_label(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(folder) == "inference":
        folder = os.path.dirname(folder)
    return os.path.basename(folder)


def _fits_paper(table: str, flops_g: float, selection: str) -> bool:
    """Whether ``flops_g`` can be a result of the paper's model of ``table`` (dense: within 10% of its dense
    FLOPs; pruned: between 10% and 110% of them)."""
    dense = _PAPER_DENSE_G[table]
    if selection == "dense":
        return 0.9 * dense <= flops_g <= 1.1 * dense
    return 0.1 * dense <= flops_g <= 1.1 * dense


def read_points(path: str, flops: str = "paper") -> List[Point]:
    """The points of one result file: a detection or recognition result JSON (one point) or a demo harness
    ``demo_results.json`` (one point per row)."""
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise PlotError(f"cannot read result file {path!r}: {e}") from e
    if isinstance(res, dict) and ("detection" in res or "recognition" in res) and "bbox" not in res:
        return demo_points(res, flops, path)
    return [read_point(path, flops, res)]


def read_point(path: str, flops: str = "paper", res: Optional[Dict[str, Any]] = None) -> Point:
    """Parse one detection or recognition result JSON into a :class:`Point`."""
    if res is None:
        try:
            with open(path) as f:
                res = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise PlotError(f"cannot read result file {path!r}: {e}") from e
    label = _config_label(path)
    if isinstance(res, dict) and isinstance(res.get("bbox"), dict):
        b = res["bbox"]
        key = f"gflops_{flops}"
        if b.get("AP50") is None or b.get(key) is None:
            raise PlotError(f"detection result {path!r} lacks bbox.AP50 or bbox.{key}")
        task, value, acc = "detection", float(b[key]), float(b["AP50"])
        split = os.path.splitext(os.path.basename(path))[0].replace("results_", "")
        frames, videos = int(b.get("frames") or 0), int(b.get("videos") or 0)
        samples = ", ".join(
            x
            for x in (f"{frames} frames" if frames else "", f"{videos} videos" if videos else "")
            if x
        )
        per_sample = 0.0
        demo = "demo" in path.lower() or "demo" in split.lower()
        dataset = "ImageNet VID" if "vid" in split.lower() or not split else split
        size = 1024 if label.startswith("res1024") else 672
        guess = f"vitdet{size}"
    elif isinstance(res, dict) and "top1" in res:
        key = f"tflops_per_video_{flops}"
        if res.get("top1") is None or res.get(key) is None:
            raise PlotError(f"recognition result {path!r} lacks top1 or {key}")
        task, value, acc = "recognition", 1000.0 * float(res[key]), float(res["top1"])
        n = int(res.get("num_videos") or 0)
        samples = f"{n} videos" if n else ""
        per_sample = 100.0 / n if n else 0.0
        name = str(res.get("dataset", "")).lower()
        split = str(res.get("split", ""))
        demo = "demo" in path.lower() or "demo" in split.lower() or "demo" in name
        guess = "epic" if "epic" in name else "kinetics"
        dataset = PAPER_PANELS[guess][1]
    else:
        raise PlotError(
            f"{path!r} is neither a detection result (bbox.AP50) nor a recognition result (top1)"
        )
    cfg = _run_config(path)
    selection = _selection_from_label(label)
    if cfg is not None:
        model, table, sel, cfg_demo = _describe_config(cfg, task)
        selection = sel if sel in _SELECTIONS else selection
        demo = demo or cfg_demo
    elif _fits_paper(guess, value, selection):
        model, table = PAPER_PANELS[guess][2], guess
    else:
        model, table = "model unknown (no config.yaml beside the results)", None
    if demo:
        dataset, table = (
            "demo VID (generated)" if task == "detection" else "demo Kinetics (generated)"
        ), None
    if isinstance(res.get("model"), str):  # a result that says what it is wins
        model = res["model"]
    return Point(
        label, value, acc, task, dataset, model, selection, _variant(label), samples, per_sample,
        table, path,
    )  # fmt: skip


def demo_points(results: Dict[str, Any], flops: str = "paper", path: str = "") -> List[Point]:
    """The points of the demo harness's results (``tools/demo.py``: ``results["detection"]``,
    ``results["recognition"]`` and further sections such as ``results["detection_cuts"]``, the videos with shot
    cuts, each its own panel; rows with ``config``, ``config_file``, ``selection``, ``gflops_paper`` /
    ``gflops_executed``, ``map50`` / ``top1`` as fractions, ``frames`` / ``videos`` and ``views_per_video``).
    """
    pts: List[Point] = []
    sections = [
        (key, key.split("_", 1)[0], key.split("_", 1)[1] if "_" in key else "")
        for key, rows in results.items()
        if key.split("_", 1)[0] in ("detection", "recognition") and isinstance(rows, list)
    ]
    for key, task, part in sections:
        acc_key = "map50" if task == "detection" else "top1"
        subset = {"cuts": ", videos with cuts"}.get(
            part, f", {part.replace('_', ' ')}" if part else ""
        )
        for r in results[key]:
            if not isinstance(r, dict):
                continue
            value = r.get(f"gflops_{flops}")
            if value is None or r.get(acc_key) is None:
                raise PlotError(f"demo row {r.get('config')!r} lacks gflops_{flops} or {acc_key}")
            cfg_file = r.get("config_file") or ""
            model = ""  # a row without a config file has the model of the task's other rows
            if cfg_file:
                from rgtp.cli import repo_root

                full = cfg_file if os.path.isabs(cfg_file) else os.path.join(repo_root(), cfg_file)
                cfg = _yaml_chain(full)
                if cfg:
                    model = _describe_config(cfg, task)[0]
            if task == "detection":
                frames, videos = int(r.get("frames") or 0), int(r.get("videos") or 0)
                samples = ", ".join(
                    x
                    for x in (
                        f"{frames} frames" if frames else "",
                        f"{videos} videos" if videos else "",
                    )
                    if x
                )
                per_sample = 0.0
                dataset = f"demo VID (generated){subset}"
            else:
                videos, views = int(r.get("videos") or 0), int(r.get("views_per_video") or 0)
                samples = (
                    f"{videos} videos" + (f" x {views} views" if views else "") if videos else ""
                )
                per_sample = 100.0 / videos if videos else 0.0
                dataset = f"demo Kinetics (generated){subset}"
            label = str(r.get("config", ""))
            selection = str(r.get("selection") or _selection_from_label(label))
            pts.append(
                Point(
                    label, float(value), 100.0 * float(r[acc_key]), task, dataset, model,
                    selection if selection in _SELECTIONS else "rollout", _variant(label), samples,
                    per_sample, None, path,
                )  # fmt: skip
            )
    for task in ("detection", "recognition"):
        known = [p.model for p in pts if p.task == task and p.model]
        for p in pts:
            if p.task == task and not p.model:
                p.model = max(set(known), key=known.count) if known else "demo model"
    return pts


def paper_points(flops: str = "paper") -> List[Point]:
    """The paper's published points (accuracy and FLOPs from ``rgtp.flops.PAPER_ROWS``); with
    ``flops="executed"`` the FLOPs of each row as this implementation executes it (closed form)."""
    from rgtp.flops import PAPER_ROWS

    pts = []
    for row in PAPER_ROWS:
        if row.accuracy is None:
            continue
        if flops == "paper":
            value = row.published
        else:
            from rgtp.flops.paper import row_flops

            value = row_flops(row, flops)
        value = float(value) * (1.0 if row.is_vitdet else 1000.0)
        task, dataset, model = PAPER_PANELS[row.table]
        label = row.config.replace("res672_", "").replace("res1024_", "")
        sel = "dense" if row.config == "baseline" else "rollout"
        pts.append(
            Point(label, value, float(row.accuracy), task, dataset, model, sel, "", "", 0.0,
                  row.table, "", True)  # fmt: skip
        )
    return pts


def select_reference(
    points: Sequence[Point], mode: str = "auto", flops: str = "paper"
) -> List[Point]:
    """The paper's points to draw: for ``mode="auto"`` those of the tables that the results match (same data
    set and model), none for ``"never"``, all for ``"all"``."""
    if mode == "never":
        return []
    ref = paper_points(flops)
    if mode == "all":
        return ref
    tables = {p.table for p in points if p.table}
    return [r for r in ref if r.table in tables]


# ------------------------------------------------------------------------------------------------ drawing
_STYLE = {
    "paper (published)": dict(color="0.55", marker="o", ls="--", mfc="white", zorder=2),
    "RGTP": dict(color="#d9480f", marker="o", ls="-", zorder=4),
    # baselines: hollow and larger, so that a baseline on top of an RGTP point stays visible
    "random tokens (baseline)": dict(
        color="#1c7ed6", marker="v", ls=":", mfc="none", mew=1.6, zorder=5
    ),
    "change-based tokens (baseline)": dict(
        color="#7048e8", marker="^", ls=":", mfc="none", mew=1.6, zorder=5
    ),
}
_EXTRA_COLORS = ["#2b8a3e", "#e67700", "#c2255c", "#0b7285", "#5f3dc4"]


def _series_style(name: str, k: int) -> Dict[str, Any]:
    if name in _STYLE:
        return dict(_STYLE[name])
    base = name.split(",")[0]
    style = dict(_STYLE.get(base, _STYLE["RGTP"]))
    style.update(color=_EXTRA_COLORS[k % len(_EXTRA_COLORS)], ls="-.", marker="D")
    return style


def _unit(task: str, values: Iterable[float]) -> Tuple[float, str]:
    """(divisor, axis unit) of a panel: detection GFLOPs per frame; recognition TFLOPs per video, or GFLOPs
    per video when every value is below 0.5 TFLOPs."""
    if task == "detection":
        return 1.0, "GFLOPs per frame"
    return (
        (1000.0, "TFLOPs per video") if max(values, default=0) >= 500 else (1.0, "GFLOPs per video")
    )


def _title(panel: Tuple[str, str, str], ours: Sequence[Point]) -> str:
    task, dataset, model = panel
    lines = [f"{dataset} — {model}"]
    samples = sorted({p.samples for p in ours if p.samples}, key=len)
    if samples and all(
        x in samples[-1] for x in samples
    ):  # "320 frames" is part of "320 frames, 16 videos"
        samples = samples[-1:]
    if samples:
        n = f"n = {samples[0]}" if len(samples) == 1 else "n = " + " / ".join(samples)
        per = sorted({round(p.per_sample, 2) for p in ours if p.per_sample})
        if len(per) == 1:
            n += f" (1 video = {per[0]:g} points)"
        lines.append(n)
    elif ours:
        lines.append("sample size not recorded")
    else:
        lines.append("published points only")
    return "\n".join(lines)


def _ylimits(values: Sequence[float], y_full: bool, min_span: float = 10.0) -> Tuple[float, float]:
    if y_full:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    pad = max(1.0, 0.15 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    if hi > 100.0:  # accuracies end at 100: keep the span, below it
        lo, hi = lo - (hi - 100.0), 100.0
    lo = max(0.0, lo)
    if lo < 0.25 * (hi - lo):  # close to zero: show zero, no break needed
        lo = 0.0
    return math.floor(lo), math.ceil(hi)


def _break_mark(ax) -> None:
    """Two short diagonal strokes across the bottom of the y axis: the axis does not start at 0."""
    kw = dict(transform=ax.transAxes, color="k", clip_on=False, lw=1.0, zorder=10)
    d = 0.015
    for y in (0.025, 0.05):
        ax.plot((-d, d), (y - d, y + d), **kw)


def _overlaps(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def _place_labels(fig, ax, items: Sequence[Tuple[float, float, str, str]], taken: List) -> List:
    """Annotate ``items`` (x, y, text, colour) at the first of a ring of offsets where the text overlaps neither
    an earlier label nor a marker and stays inside the axes; returns the label boxes (display pixels).
    """
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    candidates = []
    for r in (7, 13, 20, 28, 38):
        for dx, dy in (
            (1, 1),
            (1, -1),
            (-1, 1),
            (-1, -1),
            (0, 1.3),
            (0, -1.3),
            (1.4, 0),
            (-1.4, 0),
        ):
            candidates.append((dx * r, dy * r))
    boxes = []
    for x, y, text, color in items:
        placed = None
        for dx, dy in candidates:
            ha = "left" if dx > 0 else ("right" if dx < 0 else "center")
            va = "bottom" if dy > 0 else ("top" if dy < 0 else "center")
            t = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                fontsize=7, color=color, zorder=6,
                arrowprops=(dict(arrowstyle="-", color=color, lw=0.5, alpha=0.6)
                            if abs(dx) + abs(dy) > 30 else None),
            )  # fmt: skip
            bb = t.get_window_extent(renderer).expanded(1.04, 1.15)
            ok = (
                bb.x0 >= inside.x0
                and bb.x1 <= inside.x1
                and bb.y0 >= inside.y0
                and bb.y1 <= inside.y1
            )
            if ok and not any(_overlaps(bb, o) for o in taken):
                placed = bb
                break
            t.remove()
        if placed is None:  # crowded: the nearest spot inside the axes, flagged in the log
            t = ax.annotate(text, (x, y), xytext=(7, 7), textcoords="offset points", fontsize=7,
                            color=color, zorder=6)  # fmt: skip
            placed = t.get_window_extent(renderer)
            logger.warning("trade-off plot: no free place for label %r", text)
        taken.append(placed)
        boxes.append(placed)
    return boxes


def _draw(
    points: Sequence[Point],
    reference: Sequence[Point],
    flops: str = "paper",
    title: str = "",
    y_full: bool = False,
):
    """The figure and the label boxes of each panel (for tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    order = {"detection": 0, "recognition": 1}
    tables = {panel: i for i, panel in enumerate(PAPER_PANELS.values())}

    def panel_key(p: Point) -> tuple:
        natural = [
            int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.dataset + " " + p.model)
        ]
        return (
            order.get(p.task, 2),
            p.dataset.startswith("demo"),
            tables.get(p.panel, 99),
            natural,
        )

    panels: "OrderedDict[Tuple[str, str, str], Tuple[List[Point], List[Point]]]" = OrderedDict()
    for p in sorted(list(points) + list(reference), key=panel_key):
        panels.setdefault(p.panel, ([], []))[1 if p.paper else 0].append(p)
    if not panels:
        raise PlotError("nothing to plot: no result files and no reference points")
    n = len(panels)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.6 * rows), squeeze=False)
    laid_out = []
    for ax, (panel, (ours, ref)) in zip(axes.flat, panels.items()):
        div, unit = _unit(panel[0], [p.flops for p in ours + ref])
        series: "OrderedDict[str, List[Point]]" = OrderedDict()
        polylines: List[List[Tuple[float, float]]] = []
        styles: Dict[str, Dict[str, Any]] = {}
        dense = [p for p in ours if p.selection == "dense"]
        for p in ref + ours:
            if p.selection != "dense" or p.paper:
                series.setdefault(p.series, []).append(p)
        for k, (name, pts) in enumerate(series.items()):
            pts = sorted(pts, key=lambda p: p.flops)
            line = pts
            if name == "RGTP" and dense:  # the RGTP curve ends at the dense model it prunes
                line = sorted(pts + dense[:1], key=lambda p: p.flops)
            style = styles[name] = _series_style(name, k)
            polylines.append([(p.flops / div, p.accuracy) for p in line])
            ms = 9 if style.get("mfc") == "none" and not name.startswith("paper") else 6
            ax.plot([p.flops / div for p in line], [p.accuracy for p in line], label=name,
                    ms=ms, lw=1.4, **style)  # fmt: skip
        for p in dense:
            ax.plot([p.flops / div], [p.accuracy], marker="s", color="k", ms=7, ls="",
                    zorder=5, label="dense (no pruning)")  # fmt: skip
        values = [p.accuracy for p in ours + ref]
        lo, hi = _ylimits(values, y_full)
        ax.set_ylim(lo, hi)
        ax.set_xlim(0, 1.12 * max(p.flops / div for p in ours + ref))
        if lo > 0:
            _break_mark(ax)
        conv = "paper convention" if flops == "paper" else "as executed"
        ax.set_xlabel(f"backbone {unit} ({conv})" if panel[0] == "detection" else f"{unit} ({conv})",
                      fontsize=8)  # fmt: skip
        ylabel = _METRIC.get(panel[0], "accuracy (%)")
        ax.set_ylabel(ylabel + (f", axis from {lo:g}" if lo > 0 else ""), fontsize=8)
        ax.set_title(_title(panel, ours), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = OrderedDict((lab, h) for h, lab in zip(handles, labels))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(uniq)), frameon=False)  # fmt: skip
        laid_out.append((ax, ours, ref, div, polylines, styles))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.canvas.draw()
    boxes = []
    for ax, ours, ref, div, polylines, styles in laid_out:
        taken = []
        for p in ours + ref:  # the markers
            x, y = ax.transData.transform((p.flops / div, p.accuracy))
            taken.append(Bbox.from_extents(x - 5, y - 5, x + 5, y + 5))
        for line in polylines:  # the lines between them, sampled every few pixels
            xy = ax.transData.transform(line)
            for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
                steps = max(1, int(math.hypot(x1 - x0, y1 - y0) // 4))
                for k in range(steps + 1):
                    x, y = x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps
                    taken.append(Bbox.from_extents(x - 1.5, y - 1.5, x + 1.5, y + 1.5))
        obstacles = len(taken)
        labelled = ours if ours else ref
        items = [
            (p.flops / div, p.accuracy, p.label,
             "k" if p.selection == "dense" and not p.paper else styles[p.series]["color"])
            for p in sorted(labelled, key=lambda p: -p.flops)
        ]  # fmt: skip
        boxes.append(_place_labels(fig, ax, items, taken))
        del taken[:obstacles]
    return fig, boxes


def _save(fig, output: str, svg: bool = True) -> List[str]:
    """Write ``<stem>.png`` (and ``<stem>.svg``) atomically (``rgtp.fileio.atomic_path``)."""
    from rgtp.fileio import atomic_path

    stem = os.path.splitext(output)[0] if os.path.splitext(output)[1] else output
    written = []
    for ext, kw in ((".png", {"dpi": 110}), (".svg", {}))[: 2 if svg else 1]:
        with atomic_path(stem + ext) as tmp:
            fig.savefig(tmp, format=ext[1:], **kw)
        written.append(stem + ext)
    return written


def plot(
    points: Sequence[Point],
    reference: Sequence[Point],
    output: str,
    flops: str = "paper",
    title: str = "",
    y_full: bool = False,
    svg: bool = True,
) -> List[str]:
    """Draw one panel per (task, data set, model) and write ``<output>.png`` (and ``.svg``); returns the paths."""
    import matplotlib.pyplot as plt

    fig, _ = _draw(points, reference, flops, title, y_full)
    try:
        return _save(fig, output, svg)
    finally:
        plt.close(fig)


def plot_demo(
    results: Dict[str, Any],
    path: str,
    flops: str = "paper",
    y_full: bool = False,
    svg: bool = True,
) -> List[str]:
    """The demo's trade-off plot: the rows of ``tools/demo.py``'s results (``results["detection"]``,
    ``results["recognition"]``, ``results["detection_cuts"]``; see :func:`demo_points`), one panel per section,
    RGTP and the random / change-based baselines as separate series, sample sizes in the titles. Writes ``path``
    (PNG) and, with ``svg``, the SVG beside it (atomically); returns the paths written. Raises :class:`PlotError`
    when ``results`` hold no rows.
    """
    pts = demo_points(results, flops)
    if not pts:
        raise PlotError("the demo results hold no detection or recognition rows")
    return plot(pts, [], path, flops, "", y_full, svg)
