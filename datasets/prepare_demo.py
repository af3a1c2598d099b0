"""Generate the embedded demo data sets (a thin entry point over :mod:`rgtp_apps.demo_data`).

Usage::

    python datasets/prepare_demo.py [--root DIR] [--force] [--small] [--verify]

``DIR`` defaults to ``$RGTP_DATASETS``, falling back to ``./datasets``; it receives ``demo_vid/`` (ImageNet VID
layout, with the videos with cuts in ``demo_vid/ILSVRC2015_cuts/``) and ``demo_kinetics/`` (Kinetics layout). From
Python: ``from rgtp_apps.demo_data import prepare_demo``. The content is described in ``docs/demo_data.md``.
"""

import sys

from rgtp_apps.demo_data import main

if __name__ == "__main__":
    sys.exit(main())
