#!/usr/bin/env python
"""The embedded demo (``make demo``): dense vs RGTP vs the change-based and random baselines, on both tasks, on CPU,
and RGTP with and without cut-aware resets on videos with cuts. A thin entry point over :mod:`rgtp_apps.demo`.

    python tools/demo.py                          # the full demo (a few minutes on 2 CPU cores)
    python tools/demo.py --small --root /tmp/d    # the cut-down data of the tests (seconds)
    python tools/demo.py --max-videos 2           # only the first 2 val videos of each task
    python tools/demo.py --calibrate-cuts         # calibrate the cut threshold on the train videos with cuts
    python tools/demo.py --pack SRC DST           # store a trained checkpoint in fp16 (how models/demo/ was made)

The screen gets the tables and where the files went; everything else goes to ``OUT/demo.log`` (``--out``, default
``output/demo``). docs/demo.md describes the rows.
"""

import sys

from rgtp_apps.demo import main

from rgtp.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
