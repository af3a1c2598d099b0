"""The benchmark's outputs: ``benchmark.json`` (rows + machine), ``benchmark.md`` (the tables) and the table
printed."""

from __future__ import annotations

import math
import os
import platform
import sys
from pathlib import Path
from typing import List

import torch

from rgtp.fileio import atomic_write_json, atomic_write_text, json_safe

from .capture import capture_label
from .detector import COMPONENTS


def _ms(r: dict, key: str) -> str:
    v = r.get(key)
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{1e3 * v:.0f}"


def markdown(rows: List[dict]) -> str:
    """The Markdown table of the README's Speed section (per-frame models), then, for detector rows, the
    per-component table."""
    head = (
        "| model | size | keep | batch | dtype | threads | dense ms | full ms | pruned ms (p90) | weighted ms "
        "| speed-up weighted (FLOP ratio) | speed-up pruned (FLOP ratio) | head GFLOPs dense / pruned executed "
        "| cache MB/stream | peak MB dense / full / pruned / reset | capture |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        gflops = "–"
        if "pruned_head_executed_gflops" in r:
            gflops = f"{r['dense_head_dense_gflops']:.1f} / {r['pruned_head_executed_gflops']:.1f}"
        cache = f"{r['cache_mb_per_stream']:.0f}"
        if "head_cache_mb_per_stream" in r:
            cache += f" + {r['head_cache_mb_per_stream']:.0f} head"
        peaks = " / ".join(f"{r[f'peak_{k}_mb']:.0f}" for k in ("dense", "full", "pruned", "reset"))
        ratios = {k: f"{r[f'flop_ratio_{k}']:.2f}×" for k in ("weighted", "pruned")}
        for k in ratios:
            if f"flop_ratio_{k}_whole" in r:  # the detector: the backbone's, then backbone + head
                ratios[k] += f" backbone, {r[f'flop_ratio_{k}_whole']:.2f}× whole"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['keep']} | {r['batch']} | {r['dtype']} | {r['threads']} "
            f"| {_ms(r, 'dense_median_s')} | {_ms(r, 'full_median_s')} "
            f"| {_ms(r, 'pruned_median_s')} ({_ms(r, 'pruned_p90_s')}) | {_ms(r, 'weighted_s')} "
            f"| {r['speedup_weighted']:.2f}× ({ratios['weighted']}) "
            f"| {r['speedup_pruned']:.2f}× ({ratios['pruned']}) | {gflops} "
            f"| {cache} | {peaks} | {capture_label(r)} |"
        )
    comp = [r for r in rows if "pruned_backbone_ms" in r]
    if comp:
        lines += ["", markdown_components(comp)]
    return "\n".join(lines)


def markdown_components(rows: List[dict]) -> str:
    """Per-component median ms of detector rows: dense, full and pruned frames."""
    names = {
        "backbone": "backbone (ViT)",
        "pyramid": "pyramid",
        "rpn": "RPN head convs",
        "proposals": "proposal selection + NMS",
        "roi_heads": "ROI heads",
        "rollout": "rollout",
        "other": "other",
    }
    lines = [
        "| keep | batch | dtype | component | dense ms | full ms | pruned ms | dense / pruned |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        for c in COMPONENTS:
            d, f, p = (r[f"{k}_{c}_ms"] for k in ("dense", "full", "pruned"))
            ratio = f"{d / p:.2f}×" if p > 0.05 and d > 0.05 else "–"
            lines.append(
                f"| {r['keep']} | {r['batch']} | {r['dtype']} | {names[c]} | {d:.0f} | {f:.0f} | {p:.0f} "
                f"| {ratio} |"
            )
    return "\n".join(lines)


def markdown_video(rows: List[dict]) -> str:
    """Markdown table for per-video (ViViT) rows."""
    lines = [
        "| model | keep | views | dtype | threads | dense s/video (p90) | RGTP s/video (p90) | speed-up (FLOP ratio) "
        "| step ms full / reset / pruned / dense | peak MB dense / RGTP |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        steps = " / ".join(
            f"{1e3 * r.get(f'step_{k}_median_s', float('nan')):.0f}"
            for k in ("full", "reset", "pruned", "dense")
        )
        lines.append(
            f"| {r['model']} | {r['keep']} | {r['views']} | {r['dtype']} | {r['threads']} "
            f"| {r['dense_video_median_s']:.2f} ({r['dense_video_p90_s']:.2f}) "
            f"| {r['rgtp_video_median_s']:.2f} ({r['rgtp_video_p90_s']:.2f}) "
            f"| {r['speedup_video']:.2f}× ({r['flop_ratio_video']:.2f}×) | {steps} "
            f"| {r['peak_dense_mb']:.0f} / {r['peak_rgtp_mb']:.0f} |"
        )
    return "\n".join(lines)


def machine(device: str) -> dict:
    """What the rows were measured on."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device_name": (
            torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
        ),
    }


def write(out: Path, rows: List[dict], table: str, device: str) -> None:
    """``out/benchmark.json`` (rows and machine) and ``out/benchmark.md`` (the tables), each written atomically."""
    atomic_write_json(json_safe({"meta": machine(device), "rows": rows}), out / "benchmark.json")
    atomic_write_text(table + "\n", out / "benchmark.md")
