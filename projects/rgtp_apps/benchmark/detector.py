"""The whole-detector case: backbone, pyramid, RPN, ROI heads and rollout through ``RGTPVideoRCNN.inference``, with
per-component times.

Built from a ``configs/vid`` config with random weights (fp32; ``--dtype bf16|fp16`` runs them under autocast,
as detectron2 does) (the RGTP detector and, for ``dense``, the same weights
with ``MODEL.RGTP.ENABLED False``) and nothing else. Frames are VID-shaped (16:9, short edge resized as the test
resize) and padded to ``size``. Each stream is one video fed frame after frame: a full frame is its frame 0 (the
meta-architecture resets the stream), pruned frames follow; the untimed ``prepare`` starts the video again before a
pruned frame that the schedule would make a reset frame, so that every timed pruned frame is one.
"""

from __future__ import annotations

import argparse
from typing import Dict, List

import torch

from .cases import DTYPES, VID_FULL_FRACTION
from .timing import Stopwatch, interleaved

#: The components of a frame, in the order of the table (``other``: preprocessing, anchors, post-processing).
COMPONENTS = ("backbone", "pyramid", "rpn", "proposals", "roi_heads", "rollout", "other")


class VitdetDetectorCase:
    """The detector on a batch of ``batch`` streams (one video each) at ``size``."""

    full_fraction = VID_FULL_FRACTION

    def __init__(self, args: argparse.Namespace, keep: int) -> None:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        from rgtp_vitdet import add_rgtp_config

        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.batch = args.batch
        self.grid = args.size // 16
        self.incremental = bool(getattr(args, "incremental_head", True))
        base = (
            "configs/vid/keep512.yaml" if args.size == 672 else "configs/vid/res1024_keep400.yaml"
        )

        def build(enabled: bool) -> torch.nn.Module:
            cfg = get_cfg()
            add_rgtp_config(cfg)
            cfg.merge_from_file(base)
            cfg.merge_from_list(
                [
                    "MODEL.WEIGHTS",
                    "",
                    "MODEL.DEVICE",
                    args.device,
                    "MODEL.VIT.ATTENTION",
                    "sdpa",
                    "MODEL.RGTP.ENABLED",
                    enabled,
                    "MODEL.RGTP.KEEP_RATIO",
                    keep / self.grid**2,
                    "MODEL.RGTP.INCREMENTAL_HEAD",
                    self.incremental,
                    *getattr(args, "opts", []),
                ]
            )
            torch.manual_seed(0)
            return build_model(cfg).eval()

        self.detector = build(True)
        self.dense_detector = build(False)
        self.dense_detector.load_state_dict(self.detector.state_dict())
        self.period = self.detector.net.rgtp.reset_period
        h = args.size * 9 // 16
        g = torch.Generator().manual_seed(1)
        base_img = torch.randint(0, 256, (3, h + 16, args.size + 16), generator=g).float()
        self.images = [base_img[:, i : i + h, i : i + args.size].contiguous() for i in range(16)]
        self.t = [-1] * self.batch
        self.stopwatch = Stopwatch(self.device)
        for det in (self.detector, self.dense_detector):
            self._time_components(det)
        self.frame_types: Dict[str, set] = {"full": set(), "pruned": set(), "reset": set()}

    def _time_components(self, det: torch.nn.Module) -> None:
        sw = self.stopwatch
        sw.module("backbone", det.backbone)
        sw.module("vit", det.backbone.net)
        sw.module("rpn", det.proposal_generator.rpn_head)  # the stock head (dense frames)
        sw.method("rpn", det.streaming_rpn, "head")  # the incremental head
        sw.method("proposals", det.streaming_rpn, "proposals")
        sw.method("roi_heads", det.streaming_roi_heads, "detect")
        sw.method("rollout", det.net, "update_heatmap")

    # ------------------------------------------------------------------------------------------------ frames
    def _inputs(self, video: str) -> list:
        out = []
        for b in range(self.batch):
            img = self.images[(self.t[b] + b) % len(self.images)]
            out.append(
                {
                    "image": img,
                    "height": img.shape[1],
                    "width": img.shape[2],
                    "video_id": f"{video}{b}",
                    "frame_index": self.t[b],
                }
            )
        return out

    def _autocast(self) -> torch.autocast:
        """bf16 / fp16 as detectron2 runs them: fp32 weights under autocast (its box decoding, NMS and ROIAlign
        need fp32)."""
        return torch.autocast(
            self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )

    def _rgtp(self, kind: str) -> list:
        with self._autocast():
            outs = self.detector(self._inputs("s"))
        self.frame_types[kind] |= {o["rgtp"]["frame_type"] for o in outs}
        return outs

    def prepare(self, kind: str) -> None:
        """Untimed: before a pruned frame, start the videos again if the schedule's next frame is a reset; before a
        reset frame, run pruned frames up to the one before it."""
        if kind == "pruned" and (self.t[0] < 0 or (self.t[0] + 1) % self.period == 0):
            self.full()
        elif kind == "reset":
            if self.t[0] < 0:
                self.full()
            while (self.t[0] + 1) % self.period:
                self.pruned()

    def prepare_capture(self, args: argparse.Namespace) -> None:
        """The detector runs eager only (``--capture`` is for the backbone case)."""

    def release_streams(self) -> None:
        """Forget the streams (their backbone and head caches go); the next RGTP frame is a first frame."""
        self.detector.reset_streams()
        self.t = [-1] * self.batch

    def dense(self) -> list:
        img = self.images[0]
        inputs = [
            {"image": img, "height": img.shape[1], "width": img.shape[2], "video_id": f"d{b}"}
            for b in range(self.batch)
        ]
        with self._autocast():
            return self.dense_detector(inputs)

    def full(self) -> list:
        """A first frame of every stream (frame 0 of its video: the meta-architecture resets the stream)."""
        self.t = [0] * self.batch
        return self._rgtp("full")

    def pruned(self) -> list:
        self.t = [t + 1 for t in self.t]
        return self._rgtp("pruned")

    def reset(self) -> list:
        """The periodic reset frame (``prepare("reset")`` first)."""
        self.t = [t + 1 for t in self.t]
        return self._rgtp("reset")

    # ------------------------------------------------------------------------------------------------ records
    def flops(self) -> Dict[str, float]:
        """Per frame, as the meta-architecture counts them: the backbone (paper convention and executed) and the
        head (pyramid, RPN and box head, outside the paper's convention; dense and executed)."""
        out = {}
        for name in ("dense", "full", "pruned"):
            self.prepare(name)
            stats = getattr(self, name)()[0]["rgtp"]
            out[f"{name}_paper_gflops"] = stats["gflops_paper"]
            out[f"{name}_executed_gflops"] = stats["gflops_executed"]
            out[f"{name}_head_dense_gflops"] = stats["gflops_head_dense"]
            out[f"{name}_head_executed_gflops"] = stats["gflops_head_executed"]
        return out

    def components(self, repeats: int) -> Dict[str, float]:
        """Median ms per component of dense, pruned and full frames (interleaved, after the timed runs)."""
        samples: Dict[str, List[Dict[str, float]]] = {"dense": [], "pruned": [], "full": []}

        def record(kind: str):
            fn = getattr(self, kind)
            return lambda: samples[kind].append(self.stopwatch.measure(fn))

        interleaved({k: record(k) for k in samples}, repeats, self.device, self.prepare)
        out = {}
        for kind, runs in samples.items():
            for comp in COMPONENTS:
                vals = sorted(_component(r, comp) for r in runs)
                out[f"{kind}_{comp}_ms"] = 1e3 * vals[len(vals) // 2]
        return out

    def row_fields(self) -> Dict[str, object]:
        """Extra row fields: the head caches, the incremental switch, and the frame types actually timed."""
        det = self.detector
        state = det.stream_state("s0")
        head = 0
        if state is not None:
            head = sum(
                m.cache_bytes(state)
                for m in (det.backbone, det.streaming_rpn, det.streaming_roi_heads)
            )
        bad = {k: v for k, v in self.frame_types.items() if v - {"first" if k == "full" else k}}
        if bad:
            raise RuntimeError(f"timed frames of the wrong type: {bad}")
        roi = det.streaming_roi_heads
        seen = roi.reused + roi.computed
        return {
            "incremental_head": self.incremental,
            "head_cache_mb_per_stream": head / 2**20,
            # over the pruned frames run: the share of proposals whose box predictions were reused
            "roi_reused_fraction": roi.reused / seen if seen else 0.0,
        }

    def cache_bytes(self) -> int:
        state = self.detector.stream_state("s0")
        return state.cache_bytes() if state is not None else 0


def _component(r: Dict[str, float], comp: str) -> float:
    """Seconds of one component from a stopwatch record (``pyramid`` = backbone − ViT; ``proposals`` = proposal
    generation − RPN head convolutions; ``other`` = the rest of the frame)."""
    get = r.get
    if comp == "backbone":
        return get("vit", 0.0)
    if comp == "pyramid":
        return get("backbone", 0.0) - get("vit", 0.0)
    if comp == "proposals":
        return get("proposals", 0.0) - get("rpn", 0.0)
    if comp == "other":
        parts = ("backbone", "proposals", "roi_heads", "rollout")
        return get("total", 0.0) - sum(get(p, 0.0) for p in parts)
    return get(comp, 0.0)
