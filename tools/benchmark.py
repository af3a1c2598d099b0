#!/usr/bin/env python
"""Wall-clock benchmark of RGTP against the dense model, measured in the same run.

For each model and keep setting it times, after warm-up and with dense, pruned and full calls interleaved (so that
machine load affects them alike):

* ``dense``: the plain model on one frame;
* ``full``: an RGTP full frame (first or reset; every token, caches refilled, rollout computed);
* ``pruned``: an RGTP pruned frame (tracking, selection, kept tokens only, rollout);
* the frame-weighted average f·full + (1−f)·pruned with f the full-frame fraction of the schedule
  (ImageNet VID val: 0.12654, docs/method.md §5.2; ViViT: the tubelet schedule of the config),

and reports median and p90 seconds, speed-ups over dense, FLOPs (paper convention and executed; the detector also
its head, dense and executed), per-stream cache memory, the peak memory of a dense, full, pruned and reset frame,
the detector's per-component times (backbone, pyramid, RPN, proposal selection + NMS, ROI heads, rollout), threads,
dtype and batch of streams, as JSON and as Markdown tables. ``--compare-to REV`` (backbone, eager) also times the
core (``rgtp/``) of git revision REV in the same run, on the same weights and frames, every call interleaved. The
harness is :mod:`rgtp_apps.benchmark`.

Examples::

    python tools/benchmark.py --model vitdet-backbone --size 672 --keep 512 196
    python tools/benchmark.py --model vitdet-backbone --size 672 --keep 512 --compare-to 833646e
    python tools/benchmark.py --model vitdet-backbone --size 1024 --keep 750 --rollout backward
    python tools/benchmark.py --model vitdet-detector --size 672 --keep 512
    python tools/benchmark.py --model vivit --keep 96 --views 12
"""

from __future__ import annotations

from typing import List, Optional

from rgtp_apps.benchmark.cli import build_parser, check_args, run


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Parse the command line and run the benchmark; returns the result rows."""
    parser = build_parser(__doc__)
    args = parser.parse_args(argv)
    check_args(parser, args)
    return run(args)


if __name__ == "__main__":
    main()
