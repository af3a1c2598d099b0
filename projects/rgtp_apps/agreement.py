"""Agreement without labels: how far a pruned model's outputs stay from the dense model's on *your* videos.

For a detection (``rgtp_vitdet``) or recognition (``rgtp_vivit``) config and checkpoint and one or more videos (files
PyAV can read, or folders of frames), the dense model (the same config and weights with RGTP disabled), the pruned
model of the config and optionally the baselines ``random`` and ``change`` (the config with ``selection`` switched:
same K, schedule, caches and FLOP counter) run side by side on the same frames; the dense outputs are the reference.
No label is needed: the numbers say how much pruning *changes* the outputs, not how accurate either model is
(docs/agreement.md).

* detection (:mod:`rgtp_apps.agreement_detection`): AP50 of the pruned detections against the dense detections with
  score >= ``score_thresh`` taken as pseudo ground truth (pycocotools ``COCOeval``), mean IoU of the matched boxes,
  the share of dense detections recovered, backbone GFLOPs per frame and the speed-up (dense / pruned model time,
  measured in this run);
* recognition (:mod:`rgtp_apps.agreement_recognition`): top-1 agreement, top-5 overlap and KL(dense || pruned) per
  video (the config's multi-view test) and per consecutive clip (one centre view each), GFLOPs per video and the
  speed-up.

Writes ``OUTPUT/agreement.json`` (strict JSON: an undefined number is ``null`` with ``<key>_reason`` beside it),
``OUTPUT/agreement.md`` (Markdown tables) and one plot per video, ``OUTPUT/agreement_<i>_<name>.png``: agreement
over time with the frame types (full / reset (period) / reset (cut) / pruned) of every method marked.

::

    from rgtp_apps.agreement import run_agreement

    report = run_agreement("detection", ["clip.mp4"], "out/agreement", baselines=["random"])
    report["overall"]["methods"]["pruned"]["ap50"]
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from rgtp.cli import UserError, resolve_config_path

from .render.source import IMAGE_EXTENSIONS, frame_files

__all__ = [
    "AgreementError",
    "TASKS",
    "BASELINES",
    "DEFAULT_CONFIGS",
    "FrameReader",
    "frame_label",
    "method_specs",
    "run_agreement",
]

logger = logging.getLogger("rgtp.agreement")

TASKS = ("detection", "recognition")
#: The baselines: the pruned config with its selection switched (RGTP setting ``selection``).
BASELINES = ("random", "change")
#: The committed demo models (README "Demo").
DEFAULT_CONFIGS = {
    "detection": "configs/demo/vid_keep64.yaml",
    "recognition": "configs/demo/kin_keep14.yaml",
}
#: The config key of the RGTP switch and of the selection, per task.
ENABLE_KEYS = {"detection": "MODEL.RGTP.ENABLED", "recognition": "RGTP.ENABLE"}
SELECTION_KEYS = {"detection": "MODEL.RGTP.SELECTION", "recognition": "RGTP.SELECTION"}
WEIGHTS_KEYS = {"detection": "MODEL.WEIGHTS", "recognition": "TEST.CHECKPOINT_FILE_PATH"}
#: Frame labels of the JSON and the plots, in legend order.
FRAME_LABELS = ("full", "reset_period", "reset_cut", "pruned", "dense")


class AgreementError(UserError):
    """An unusable input, config or result; the message says what, where and how to fix it."""


# ------------------------------------------------------------------------------------------------------- frames
class FrameReader:
    """RGB uint8 ``(H, W, 3)`` frames of a video file (decoded lazily with PyAV, upright as a player shows them) or
    of a folder of images (sorted by name), at most ``max_frames``. After iterating, ``problem`` says why decoding
    stopped early ('' when it did not) and ``read`` how many frames were yielded. Raises :class:`AgreementError`
    when the input cannot be opened or holds no frame."""

    def __init__(self, path: str, max_frames: Optional[int] = None) -> None:
        self.path = path
        self.max_frames = max_frames
        self.problem = ""
        self.read = 0
        self.files: List[str] = []
        self.count: Optional[int] = None
        if os.path.isdir(path):
            self.files = frame_files(path)
            if not self.files:
                raise AgreementError(
                    f"folder {path!r} holds no frames (files ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
            self.count = len(self.files)
        elif os.path.isfile(path):
            reader = self._open()
            self.count = reader.announced or None
            reader.close()
        else:
            raise AgreementError(
                f"input {path!r} does not exist: pass a video file or a frame folder"
            )
        if self.count is not None and max_frames:
            self.count = min(self.count, max_frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.read, self.problem = 0, ""
        source = self._images() if self.files else self._decode()
        for frame in source:
            self.read += 1
            yield frame
            if self.max_frames and self.read >= self.max_frames:
                return
        if self.read == 0:
            why = f": {self.problem}" if self.problem else ""
            raise AgreementError(f"no frame could be read from {self.path!r}{why}")

    def _images(self) -> Iterator[np.ndarray]:
        from PIL import Image, UnidentifiedImageError

        for i, f in enumerate(self.files):
            try:
                with Image.open(f) as im:
                    yield np.array(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                self.problem = f"frame {i} {f!r} is not a readable image ({e}); stopped there"
                return

    def _open(self):
        from rgtp_vivit.video import VideoError, VideoReader

        try:
            return VideoReader(self.path)
        except VideoError as e:
            raise AgreementError(f"cannot read video {self.path!r}: {e}") from None

    def _decode(self) -> Iterator[np.ndarray]:
        from rgtp_vivit.video import VideoError

        reader = self._open()
        try:
            yield from reader  # upright RGB frames, as a player shows them
        except VideoError as e:  # nothing decodes
            self.problem = str(e)
        finally:
            reader.close()
        self.problem = self.problem or reader.problem

    def load(self) -> np.ndarray:
        """All frames as one ``(L, H, W, 3)`` array (the frames of a folder must share one size)."""
        frames = list(self)
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise AgreementError(f"the frames of {self.path!r} have several sizes {sorted(shapes)}")
        return np.stack(frames)


def video_names(paths: Sequence[str]) -> List[str]:
    """A short, file-name-safe, unique name per input (its base name)."""
    names: List[str] = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(os.path.normpath(p))) or "video"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def frame_label(frame_type: Optional[str], reset_cause: Optional[str]) -> str:
    """``full`` (first frame), ``reset_period``, ``reset_cut``, ``pruned`` or ``dense``."""
    if frame_type == "first":
        return "full"
    if frame_type == "reset":
        return "reset_cut" if reset_cause == "cut" else "reset_period"
    return "pruned" if frame_type == "pruned" else "dense"


def count_labels(labels: Sequence[str]) -> Dict[str, int]:
    """How many frames (or tubelet steps) of each label (every label of :data:`FRAME_LABELS`)."""
    return {k: sum(1 for x in labels if x == k) for k in FRAME_LABELS}


def ratio(num: float, den: float, reason: str) -> Tuple[Optional[float], Optional[str]]:
    """``num / den``, or (None, reason) when ``den`` is 0 or the result is not finite."""
    if not den:
        return None, reason
    v = float(num) / float(den)
    return (v, None) if np.isfinite(v) else (None, reason)


def put(d: Dict[str, Any], key: str, value: Tuple[Optional[float], Optional[str]]) -> None:
    """``d[key] = value[0]``, and ``d[key + '_reason']`` when the value is undefined (None)."""
    d[key] = value[0]
    if value[0] is None:
        d[f"{key}_reason"] = value[1] or "undefined"


# ------------------------------------------------------------------------------------------------------ methods
def method_specs(
    task: str, baselines: Sequence[str], opts: Sequence[str], pruned_opts: Sequence[str]
) -> List[Tuple[str, List[str]]]:
    """``(name, config overrides)`` of every method, the dense reference first: ``dense`` (RGTP disabled),
    ``pruned`` (the config as given, plus ``pruned_opts``) and each baseline (the pruned config with ``selection``
    switched). ``opts`` apply to all of them."""
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise AgreementError(f"unknown baseline(s) {bad}: allowed {list(BASELINES)} (--baselines)")
    specs = [("dense", [*opts, ENABLE_KEYS[task], "False"]), ("pruned", [*opts, *pruned_opts])]
    for b in dict.fromkeys(baselines):
        specs.append((b, [*opts, *pruned_opts, SELECTION_KEYS[task], b]))
    return specs


def resolve_inputs(
    task: str, config_file: Optional[str], weights: Optional[str], opts: Sequence[str]
) -> Tuple[str, List[str]]:
    """The config file (the task's demo config by default; relative paths: the working directory, then the
    repository root) and ``opts`` with the checkpoint override appended."""
    if task not in TASKS:
        raise AgreementError(f"unknown task {task!r}: allowed {list(TASKS)} (--task)")
    if len(opts) % 2:
        raise AgreementError(f"config overrides must be KEY VALUE pairs, got {list(opts)} (--opts)")
    path = config_file or DEFAULT_CONFIGS[task]
    try:
        path = resolve_config_path(path, "--config-file")
    except UserError as e:
        raise AgreementError(str(e)) from None
    if not os.path.isfile(path):
        raise AgreementError(f"config file {path!r} (--config-file) is not a file")
    out = list(opts)
    if weights:
        try:
            out += [WEIGHTS_KEYS[task], resolve_config_path(weights, "--weights")]
        except UserError as e:
            raise AgreementError(str(e)) from None
    return path, out


def skipped_reason(name: str, task: str, error: Exception) -> str:
    """Why a baseline could not be built (the projects' config validation rejects its selection)."""
    return (
        f"{SELECTION_KEYS[task]}={name!r} is rejected by the project's config validation ({error}); the "
        f"override is passed as is and works once the project accepts it"
    )


# ------------------------------------------------------------------------------------------------------ driver
def run_agreement(
    task: str,
    videos: Sequence[str],
    output: str,
    config_file: Optional[str] = None,
    weights: Optional[str] = None,
    baselines: Sequence[str] = (),
    score_thresh: float = 0.5,
    max_frames: Optional[int] = None,
    opts: Sequence[str] = (),
    pruned_opts: Sequence[str] = (),
    device: str = "auto",
    progress: bool = True,
    plots: bool = True,
) -> Dict[str, Any]:
    """Run dense, pruned and the ``baselines`` side by side on ``videos`` and write the report to ``output`` (a
    folder): ``agreement.json``, ``agreement.md`` and a plot per video. Returns the JSON report.

    Args:
        task: ``detection`` or ``recognition``.
        videos: video files (any PyAV-readable format) or folders of frames.
        config_file: the pruned config (default: the task's demo config, :data:`DEFAULT_CONFIGS`).
        weights: checkpoint overriding the config's (``MODEL.WEIGHTS`` / ``TEST.CHECKPOINT_FILE_PATH``).
        baselines: any of ``random``, ``change``.
        score_thresh: detection: dense detections with a score >= this are the pseudo ground truth (and the
            detections that count as recovered).
        max_frames: read at most this many frames of each video.
        opts: ``KEY VALUE`` config overrides of every method; ``pruned_opts`` of the pruned model and the baselines
            only (``[ENABLE_KEY, "False"]`` gives a dense-vs-dense check: every agreement is 1).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    Raises :class:`AgreementError` for unusable inputs and when no frame of any video could be read.
    """
    from .agreement_report import write_report

    if not videos:
        raise AgreementError("no video given: pass one or more video files or frame folders")
    missing = [v for v in videos if not os.path.exists(v)]
    if missing:
        raise AgreementError(f"input(s) {missing} do not exist: pass video files or frame folders")
    if not 0.0 <= float(score_thresh) <= 1.0:
        raise AgreementError(f"--score-thresh {score_thresh} must lie in [0, 1]")
    if max_frames is not None and max_frames < 1:
        raise AgreementError(f"--max-frames {max_frames} must be an integer >= 1")
    if device not in ("auto", "cpu", "cuda"):
        raise AgreementError(f"--device {device!r}: allowed 'auto', 'cpu' or 'cuda'")
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise AgreementError(
            "--device cuda but CUDA is not available here: use --device cpu or auto"
        )
    path, all_opts = resolve_inputs(task, config_file, weights, opts)
    specs = method_specs(task, baselines, all_opts, pruned_opts)
    common = dict(
        videos=list(videos),
        names=video_names(videos),
        config_file=path,
        specs=specs,
        max_frames=max_frames,
        device=device,
        progress=progress,
        explicit_pruned=bool(pruned_opts),
    )
    if task == "detection":
        from .agreement_detection import evaluate_detection

        report = evaluate_detection(score_thresh=float(score_thresh), **common)
    else:
        from .agreement_recognition import evaluate_recognition

        report = evaluate_recognition(**common)
    report.update(task=task, device=device, max_frames=max_frames)
    if not report["videos"]:
        why = "; ".join(f"{s['video']}: {s['error']}" for s in report["skipped_videos"])
        raise AgreementError(f"nothing measured: no readable frame in any input ({why})")
    write_report(report, output, plots=plots)
    return report
