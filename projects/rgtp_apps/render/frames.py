"""One rendered frame per task: the kept tokens (pruned ones dimmed) with the shown detections, the rollout heatmap
with its anchors, and the caption bar.

Detection: the left panel shows the tokens computed on this frame and the detections with score >= the drawing
threshold (solid, labelled); the right panel shows the rollout heatmap computed from this frame's detections (it
selects the next frame's tokens) with its anchors, every detection with score > ``MODEL.RGTP.ANCHOR_SCORE_THRESH``
(dashed, unlabelled; when there is none, every token is an anchor). A dense config has no heatmap: one panel.
Kept counts are over the tokens that lie on the image; tokens on the padding of the canvas are counted apart.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rgtp import visualize as vis

from .layout import GAP, CaptionBar, Layout, draw_dashed_boxes, kept_caption, token_count

__all__ = [
    "render_detection",
    "detection_lines",
    "render_recognition",
    "recognition_lines",
    "frame_label",
]


def is_dense(frame_type: Any) -> bool:
    """Whether a frame (step) comes from a dense config: one panel, no heatmap."""
    return str(getattr(frame_type, "value", frame_type)) == "dense"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def frame_label(index: int, total: Optional[int]) -> str:
    """``frame 3/20`` (``frame 3`` when the length is unknown)."""
    return f"frame {index + 1}{f'/{total}' if total else ''}"


def _compose(
    panels: Sequence[np.ndarray], lines: List[str], bar: Optional[CaptionBar]
) -> np.ndarray:
    image = vis.hstack(list(panels), gap=GAP) if len(panels) > 1 else panels[0]
    bar = bar if bar is not None else CaptionBar(image.shape[1])
    return bar.below(image, lines)


def _detections(out: Dict[str, Any]):
    inst = out["instances"]
    scores = np.asarray(inst.scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(inst.pred_boxes.tensor, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(inst.pred_classes).reshape(-1).astype(np.int64)
    return scores, boxes, classes


def detection_lines(
    out: Dict[str, Any],
    image_hw: Tuple[int, int],
    thresh: float,
    index: int,
    total: Optional[int],
    anchor_thresh: float = 0.1,
) -> List[str]:
    """The caption of a rendered detection frame: frame, type, kept tokens over the image tokens (padding apart),
    GFLOPs and time; then what the panels show (no heatmap panel for a dense config)."""
    geom = vis.TokenGeometry(tuple(out["grid"]), tuple(out["cell"]))
    scores = _detections(out)[0]
    count = token_count(out["kept"], geom, image_hw)
    g = out.get("gflops")
    head = [
        frame_label(index, total),
        str(out["frame_type"]),
        kept_caption(count, out["kept"] is None),
        f"{'-' if g is None else f'{g:.3g}'} GFLOPs",
        f"{out['ms']:.0f} ms",
    ]
    shown = _n(int((scores >= thresh).sum()), "detection") + f" >= {thresh:g}"
    if is_dense(out["frame_type"]):  # a dense config: nothing is pruned, there is no heatmap
        return [" | ".join(head), f"dense model (no pruning, no heatmap) | {shown}"]
    n_anchors = int((scores > anchor_thresh).sum())
    anchors = (
        f"{_n(n_anchors, 'anchor')} (score > {anchor_thresh:g}, dashed)"
        if n_anchors
        else f"no detection > {anchor_thresh:g}: every token an anchor"
    )
    return [
        " | ".join(head),
        f"left: tokens computed (pruned dimmed), {shown} | "
        f"right: rollout heatmap for the next frame, {anchors}",
    ]


def render_detection(
    frame: np.ndarray,
    out: Dict[str, Any],
    names: Sequence[str],
    thresh: float,
    index: int,
    total: Optional[int],
    layout: Optional[Layout] = None,
    anchor_thresh: float = 0.1,
    bar: Optional[CaptionBar] = None,
) -> np.ndarray:
    """The rendered frame of one :class:`rgtp_vitdet.predictor.VideoPredictor` output ``out`` on ``frame``.

    ``thresh``: the drawing threshold of the detections; ``anchor_thresh``: the model's anchor threshold
    (``MODEL.RGTP.ANCHOR_SCORE_THRESH``); ``layout``: the display scale (default: the frame as decoded);
    ``bar``: the video's caption bar (default: a new one for this frame).
    """
    layout = layout or Layout()
    shown_geom = layout.geometry(vis.TokenGeometry(tuple(out["grid"]), tuple(out["cell"])))
    scores, boxes, classes = _detections(out)
    drawn = scores >= thresh
    labels = [
        f"{names[c] if c < len(names) else c} {s:.2f}"
        for c, s in zip(classes[drawn].tolist(), scores[drawn].tolist())
    ]
    shown = layout.frame(frame)
    left = vis.draw_kept_grid(shown, out["kept"], shown_geom)
    left = vis.draw_boxes(left, layout.boxes(boxes[drawn]), labels, classes[drawn].tolist())
    lines = detection_lines(out, frame.shape[:2], thresh, index, total, anchor_thresh)
    if is_dense(out["frame_type"]):
        return _compose([left], lines, bar)
    right = (
        shown if out["heatmap"] is None else vis.overlay_heatmap(shown, out["heatmap"], shown_geom)
    )
    right = draw_dashed_boxes(right, layout.boxes(boxes[scores > anchor_thresh]))
    return _compose([left, right], lines, bar)


def recognition_lines(
    step: Any,
    geometry: vis.TokenGeometry,
    image_hw: Tuple[int, int],
    index: int,
    total: Optional[int],
    tubelet: int,
    tubelets: int,
    top5: str,
) -> List[str]:
    """The caption of a rendered recognition frame (no heatmap panel for a dense config)."""
    count = token_count(step.kept, geometry, image_hw)
    head = [
        frame_label(index, total),
        f"tubelet {tubelet + 1}/{tubelets} {step.frame_type}",
        kept_caption(count, step.kept is None),
        f"{step.gflops:.3g} GFLOPs",
        f"{step.ms:.0f} ms",
    ]
    lines = [" | ".join(head), f"clip top-5: {top5}"]
    if is_dense(step.frame_type):
        return lines + ["dense model (no pruning, no heatmap): the centre crop is classified"]
    return lines + [
        "left: tokens computed on this tubelet (pruned dimmed) | right: class-token rollout (centre crop)"
    ]


def render_recognition(
    frame: np.ndarray,
    step: Any,
    geometry: vis.TokenGeometry,
    index: int,
    total: Optional[int],
    tubelet: int,
    tubelets: int,
    top5: str,
    layout: Optional[Layout] = None,
    bar: Optional[CaptionBar] = None,
) -> np.ndarray:
    """The rendered frame of one tubelet step ``step`` (:class:`rgtp_vivit.visualize.StepInfo`) on ``frame``;
    ``geometry`` places the view's token grid on the frame, ``top5`` is the clip's top-5 text."""
    layout = layout or Layout()
    shown = layout.frame(frame)
    shown_geom = layout.geometry(geometry)
    left = vis.draw_kept_grid(shown, step.kept, shown_geom)
    lines = recognition_lines(
        step, geometry, frame.shape[:2], index, total, tubelet, tubelets, top5
    )
    if is_dense(step.frame_type):
        return _compose([left], lines, bar)
    right = shown if step.heatmap is None else vis.overlay_heatmap(shown, step.heatmap, shown_geom)
    return _compose([left, right], lines, bar)
