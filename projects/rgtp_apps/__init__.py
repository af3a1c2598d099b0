"""Applications built on both projects (import name ``rgtp_apps``): the embedded demo and its data generator, the
benchmark harness, the video renderer, the agreement report and the trade-off plot. The entry points in ``tools/``
parse arguments and call one function here. Imports run tools → rgtp_apps → (rgtp_vitdet, rgtp_vivit) → rgtp.
"""
