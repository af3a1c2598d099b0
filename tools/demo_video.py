#!/usr/bin/env python
"""Render what RGTP keeps, frame by frame, on any video (detectron2 demo style).

Detection (the pruned ViTDet, rollout state carried from frame to frame)::

    python tools/demo_video.py --config-file configs/vid/keep512.yaml --input clip.mp4 --output out.mp4 \
        --opts MODEL.WEIGHTS checkpoints/frcnn_vitdet_final.pth

Recognition (the pruned ViViT on consecutive clips of NUM_FRAMES x SAMPLING_RATE frames, one centre view each)::

    python tools/demo_video.py --task recognition --config-file configs/kinetics/keep_049.yaml \
        --input clip.mp4 --output out.gif --opts TEST.CHECKPOINT_FILE_PATH weights/vivit.pyth

``--input`` is a video file that PyAV can read (any container, any resolution) or a folder of frames (sorted by
name). Every output frame shows, left, the frame with the kept tokens (pruned tokens dimmed) and the detections and,
right, the rollout heatmap; a caption gives the frame type (first / reset / pruned), the tokens kept, GFLOPs and
milliseconds (and the top-5 classes for recognition). The output (``.mp4`` or ``.gif``) has one frame per input
frame; it is written to a temporary name and renamed when complete, so a failure leaves no partial file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from fractions import Fraction
from typing import Iterator, List, Optional, Sequence

import av
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from rgtp import visualize as vis

logger = logging.getLogger("rgtp.demo_video")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
OUTPUT_EXTENSIONS = (".mp4", ".gif")


class DemoError(RuntimeError):
    """Unusable input or output; the message names the file (and the frame)."""


# ------------------------------------------------------------------------------------------------------ input
class FrameSource:
    """RGB uint8 frames of a video file (decoded lazily with PyAV) or of a folder of images, with the frame rate
    and, when known, the number of frames."""

    def __init__(self, path: str, fps: Optional[float] = None) -> None:
        self.path = path
        if os.path.isdir(path):
            self.files = sorted(
                os.path.join(path, f)
                for f in os.listdir(path)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not self.files:
                raise DemoError(f"folder {path!r} holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
            self.fps = Fraction(fps or 25).limit_denominator(1001)
            self.count: Optional[int] = len(self.files)
            self._container = None
        elif os.path.isfile(path):
            self.files = []
            try:
                self._container = av.open(path)
            except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
                raise DemoError(
                    f"cannot read video {path!r}: not a video PyAV can open ({e})"
                ) from e
            if not self._container.streams.video:
                self._container.close()
                raise DemoError(f"cannot read video {path!r}: it has no video stream")
            stream = self._container.streams.video[0]
            rate = fps or stream.average_rate or stream.guessed_rate or 25
            self.fps = Fraction(rate).limit_denominator(1001)
            self.count = int(stream.frames) or None
        else:
            raise DemoError(f"input {path!r} does not exist")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._container is None:
            yield from self._images()
        else:
            yield from self._decode()

    def _images(self) -> Iterator[np.ndarray]:
        shape = None
        for i, f in enumerate(self.files):
            try:
                with Image.open(f) as im:
                    im.load()
                    arr = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise DemoError(f"cannot read frame {i} {f!r}: not a readable image ({e})") from e
            if shape is not None and arr.shape != shape:
                raise DemoError(
                    f"frame {i} {f!r} is {arr.shape[1]}x{arr.shape[0]} but the first frame is "
                    f"{shape[1]}x{shape[0]}: all frames of a folder must have one size"
                )
            shape = arr.shape
            yield arr

    def _decode(self) -> Iterator[np.ndarray]:
        assert self._container is not None
        stream = self._container.streams.video[0]
        n = 0
        try:
            for frame in self._container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                n += 1
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise DemoError(f"cannot decode frame {n} of video {self.path!r}: {e}") from e
        finally:
            self._container.close()
        if n == 0:
            raise DemoError(f"no frames could be decoded from video {self.path!r}")


# ----------------------------------------------------------------------------------------------------- output
def _atomic_png(frame: np.ndarray, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}.png")
    Image.fromarray(frame).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)


class AtomicVideoWriter:
    """Write frames to an ``.mp4`` (H.264 where available, else MPEG-4 part 2; yuv420p) or an animated ``.gif``
    under a temporary name in the output folder; :meth:`commit` renames it into place, :meth:`abort` deletes it.
    """

    def __init__(self, path: str, fps: Fraction) -> None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in OUTPUT_EXTENSIONS:
            raise DemoError(f"output {path!r}: the extension must be one of {OUTPUT_EXTENSIONS}")
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.path = path
        self.ext = ext
        self.fps = fps
        self.tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}{ext}")
        self.count = 0
        self._container = None
        self._stream = None
        self._gif: List[Image.Image] = []
        self._size = None
        self.save_frame: Optional[tuple] = None

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame (every frame must have the first frame's size)."""
        frame = vis.pad_to_even(frame)
        if self.save_frame is not None and self.count == self.save_frame[0]:
            _atomic_png(frame, self.save_frame[1])
        if self._size is None:
            self._size = frame.shape[:2]
            if self.ext == ".mp4":
                self._open_mp4(*self._size)
        elif frame.shape[:2] != self._size:
            raise DemoError(
                f"rendered frame {self.count} has size {frame.shape[:2]}, expected {self._size}"
            )
        if self.ext == ".gif":
            self._gif.append(
                Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            )
        else:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.count
            vf.time_base = 1 / self.fps
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        self.count += 1

    def _open_mp4(self, h: int, w: int) -> None:
        self._container = av.open(self.tmp, "w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": "23", "preset": "medium"}
        else:
            self._stream.bit_rate = int(max(1_000_000, w * h * float(self.fps) * 0.3))

    def commit(self) -> str:
        """Finish the file and rename it to the output path."""
        if self.count == 0:
            raise DemoError(f"no frames to write to {self.path!r}")
        if self.ext == ".gif":
            duration = max(20, int(round(1000 / float(self.fps))))
            self._gif[0].save(
                self.tmp,
                format="GIF",
                save_all=True,
                append_images=self._gif[1:],
                duration=duration,
                loop=0,
            )
            self._gif = []
        else:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self._container = None
        self._gif = []
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


# -------------------------------------------------------------------------------------------------- detection
def setup_detection_cfg(config_file: str, opts: Sequence[str]):
    """The detectron2 config of ``config_file`` with the project keys and the ``KEY VALUE`` overrides."""
    from detectron2.config import get_cfg
    from rgtp_vitdet import add_rgtp_config

    if not os.path.isfile(config_file):
        raise DemoError(f"config file {config_file!r} does not exist")
    cfg = get_cfg()
    add_rgtp_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def _detection_names(cfg) -> List[str]:
    from rgtp_vitdet import VID_CLASSES

    k = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    return list(VID_CLASSES) if len(VID_CLASSES) == k else [f"class {i}" for i in range(k)]


def render_detection(
    frame: np.ndarray,
    out: dict,
    names: Sequence[str],
    thresh: float,
    index: int,
    total: Optional[int],
) -> np.ndarray:
    """The two-panel frame (kept tokens + detections | rollout heatmap) with its caption."""
    geom = vis.TokenGeometry(tuple(out["grid"]), tuple(out["cell"]))
    inst = out["instances"]
    keep = inst.scores >= thresh
    boxes = inst.pred_boxes.tensor[keep]
    classes = inst.pred_classes[keep].tolist()
    labels = [
        f"{names[c] if c < len(names) else c} {s:.2f}"
        for c, s in zip(classes, inst.scores[keep].tolist())
    ]
    left = vis.draw_boxes(vis.draw_kept_grid(frame, out["kept"], geom), boxes, labels, classes)
    if out["heatmap"] is not None:
        right = vis.draw_boxes(
            vis.overlay_heatmap(frame, out["heatmap"], geom), boxes, None, classes
        )
    else:
        right = frame
    n = geom.grid[0] * geom.grid[1]
    k = n if out["kept"] is None else int(out["kept"].numel())
    g = out["gflops"]
    lines = [
        f"frame {index + 1}{f'/{total}' if total else ''} | {out['frame_type']} | kept {k}/{n} tokens | "
        f"{'-' if g is None else f'{g:.3g}'} GFLOPs | {out['ms']:.0f} ms",
        f"left: kept tokens (pruned dimmed), detections >= {thresh:g} | right: rollout heatmap",
    ]
    return vis.add_caption(vis.hstack([left, right]), lines)


def run_detection(args: argparse.Namespace, source: FrameSource, writer: AtomicVideoWriter) -> None:
    """Detect on every frame of ``source`` with one carried stream state and write the rendered frames."""
    from rgtp_vitdet.predictor import VideoPredictor

    cfg = setup_detection_cfg(args.config_file, args.opts)
    predictor = VideoPredictor(cfg, input_format="RGB")
    names = _detection_names(predictor.cfg)
    for i, frame in enumerate(tqdm(source, total=source.count, desc="rendering", unit="frame")):
        out = predictor(frame)
        writer.write(
            render_detection(frame, out, names, args.confidence_threshold, i, source.count)
        )


# ------------------------------------------------------------------------------------------------ recognition
def setup_recognition_cfg(config_file: str, opts: Sequence[str]):
    """The fvcore config of the recogniser (``load_config``: defaults, file, overrides, validated)."""
    from rgtp_vivit.config import load_config

    if not os.path.isfile(config_file):
        raise DemoError(f"config file {config_file!r} does not exist")
    return load_config(argparse.Namespace(cfg_files=[config_file], opts=list(opts)))


def run_recognition(
    args: argparse.Namespace, source: FrameSource, writer: AtomicVideoWriter
) -> None:
    """Classify consecutive clips of ``NUM_FRAMES x SAMPLING_RATE`` frames (one centre view each) and render every
    frame with the heatmap of its tubelet and the clip's top-5 classes."""
    import torch
    from rgtp_vivit.distributed import device_for
    from rgtp_vivit.test_net import build_test_model
    from rgtp_vivit.visualize import (
        class_names,
        clip_view,
        recognize_clip,
        step_of_frame,
        view_geometry,
    )

    cfg = setup_recognition_cfg(args.config_file, args.opts)
    device = device_for(cfg)
    model = build_test_model(cfg, cfg.TEST.CHECKPOINT_FILE_PATH, device)
    names = class_names(cfg, args.class_names or "")
    span = cfg.DATA.NUM_FRAMES * cfg.DATA.SAMPLING_RATE
    bar = tqdm(total=source.count, desc="rendering", unit="frame")
    chunk: List[np.ndarray] = []
    done = 0

    def flush() -> None:
        nonlocal done
        frames = np.stack(chunk)
        h, w = frames.shape[1:3]
        res = recognize_clip(model, clip_view(frames, cfg).to(device))
        probs = torch.softmax(res.logits[0], dim=0)
        top = torch.topk(probs, min(5, probs.numel()))
        top5 = ", ".join(
            f"{names[i]} {100 * p:.0f}%" for p, i in zip(top.values.tolist(), top.indices.tolist())
        )
        grid, cell, origin = view_geometry(h, w, cfg)
        geom = vis.TokenGeometry(grid, cell, origin)
        steps = len(res.steps)
        for o, frame in enumerate(chunk):
            t = step_of_frame(o, cfg, steps)
            st = res.steps[t]
            left = vis.draw_kept_grid(frame, st.kept, geom)
            right = (
                vis.overlay_heatmap(frame, st.heatmap, geom) if st.heatmap is not None else frame
            )
            k = st.num_tokens if st.kept is None else int(st.kept.numel())
            lines = [
                f"frame {done + 1}{f'/{source.count}' if source.count else ''} | tubelet {t + 1}/{steps} "
                f"{st.frame_type} | kept {k}/{st.num_tokens} | {st.gflops:.3g} GFLOPs | {st.ms:.0f} ms",
                f"clip top-5: {top5}",
            ]
            writer.write(vis.add_caption(vis.hstack([left, right]), lines))
            done += 1
            bar.update(1)
        chunk.clear()

    try:
        for frame in source:
            chunk.append(frame)
            if len(chunk) == span:
                flush()
        if chunk:
            flush()
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------------------- main
def get_parser() -> argparse.ArgumentParser:
    """The command line (detectron2 demo style)."""
    p = argparse.ArgumentParser(
        description="RGTP video demo: kept tokens, rollout heatmaps, detections/classes."
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to the config file")
    p.add_argument(
        "--input",
        required=True,
        help="a video file (any PyAV-readable format) or a folder of frames",
    )
    p.add_argument("--output", required=True, help="the rendered video: .mp4 or .gif")
    p.add_argument("--task", choices=("detection", "recognition"), default="detection")
    p.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score of drawn detections"
    )
    p.add_argument(
        "--fps", type=float, default=None, help="frame rate of a folder of frames (default 25)"
    )
    p.add_argument(
        "--class-names", default="", help="recognition: a file with one class name per line"
    )
    p.add_argument(
        "--save-frame",
        nargs=2,
        metavar=("INDEX", "PNG"),
        default=None,
        help="also save rendered frame INDEX (0-based) losslessly as a PNG",
    )
    p.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs"
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit status (2 with a one-line error for unusable input, config or output)."""
    args = get_parser().parse_args(argv)
    if len(args.opts) % 2:
        print(f"error: --opts needs KEY VALUE pairs, got {args.opts}", file=sys.stderr)
        return 2
    writer: Optional[AtomicVideoWriter] = None
    try:
        source = FrameSource(args.input, args.fps)
        writer = AtomicVideoWriter(args.output, source.fps)
        if args.save_frame is not None:
            writer.save_frame = (int(args.save_frame[0]), args.save_frame[1])
        if args.task == "detection":
            run_detection(args, source, writer)
        else:
            run_recognition(args, source, writer)
        path = writer.commit()
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if isinstance(e, (DemoError, FileNotFoundError, ValueError)) or type(e).__name__ in (
            "ConfigError",
            "CheckpointError",
        ):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    print(f"wrote {writer.count} frames to {path}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
