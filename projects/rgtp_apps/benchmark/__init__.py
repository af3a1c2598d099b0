"""The wall-clock benchmark of RGTP against the dense model, measured in the same run (``tools/benchmark.py``).

* :mod:`.cases`: what is timed (the ViTDet backbone, the ViViT recogniser; :mod:`.detector`: the whole detector,
  with per-component times);
* :mod:`.capture`: ``--capture compile|cudagraph`` (the static pruned frame, its replay and its check);
* :mod:`.timing`: how it is timed (interleaved calls, per-component stopwatches, one result row per setting);
* :mod:`.memory`: the peak memory of each frame type;
* :mod:`.baseline`: ``--compare-to REV``, the core of another git revision timed in the same run;
* :mod:`.report`: the JSON rows and the Markdown tables;
* :mod:`.cli`: the command line (parsed by ``tools/benchmark.py``);
* :mod:`.gpu_check`: ``tools/gpu_check.sh``, the one-command check on a CUDA machine.
"""
