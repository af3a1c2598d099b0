"""FLOP accounting with the paper's conventions (docs/method.md §5): closed forms, the frame-schedule average, the
published numbers, and runners that count the model by executing it (on the ``meta`` device).

Conventions (docs/method.md §5.1): one multiply-accumulate = one FLOP; backbone only; counted are linear layers
(MACs), their bias adds, matmuls (attention, rollout, token matching), the relative-position einsums and tensor adds
(residuals, position encoding, relative-position bias adds). Not counted: patch/tubelet embedding, LayerNorm,
softmax, GELU, the q scaling, pooling, interpolation, gather/scatter/sort, and the detection neck and head (ViViT
counts its temporal model and classifier). The categories are those of :mod:`rgtp.counting` (``linear``,
``bias``, ``matmul``, ``einsum``, ``add``), so a closed form can be compared with a measured count category by
category.

Two figures exist for every configuration:

* ``paper``: what the official implementation executes and the paper charges. On ViTDet pruned frames it runs block
  0's projection and first residual on all N tokens, windowed attention (with its relative-position terms) for all
  N (padded) queries in every windowed block, and the global blocks' relative-position einsum and bias adds at full
  N×N (docs/method.md §5.2, §9.1).
* ``executed``: what our implementation runs. It skips some of that wasted work; which parts exactly is described
  by an :class:`Implementation`, so that the closed form follows the implementation when it changes. Our ViTDet
  has two windowed-attention paths (``PrunedViT.uses_window_kept_only(device)``), each with its closed form,
  :func:`executed_convention`: kept-query windows (:data:`EXECUTED`, the ``executed`` name; the default on CPU and
  ``meta``) and dense windows (:data:`EXECUTED_DENSE_WINDOWS`; the default on CUDA). Full frames and all ViViT
  frames cost the same in both conventions; the only ViViT difference is the EPIC noun head our recogniser runs and
  the official model discards (charged to both).

ViTDet is reported per frame averaged over all ImageNet-VID val frames, ``f·F + (1−f)·P`` with the full-frame
fraction :data:`VID_VAL_FULL_FRAME_FRACTION`; ViViT per video (12 views, spatial + temporal model + classifier).
Kept counts K come from :func:`rgtp.selection.kept_count`, the one rule the models follow too.

Modules: :mod:`.breakdown` (terms and conventions), :mod:`.vitdet` and :mod:`.vivit` (the closed forms),
:mod:`.paper` (the published rows, accuracies and the schedule average), :mod:`.measure` (counting by execution)
and :mod:`.table` (the report of ``tools/count_flops.py --paper-table``). The package imports only torch and the
core (:mod:`rgtp.counting`, :mod:`rgtp.config`, :mod:`rgtp.selection`); the runners of :mod:`.measure` import
:mod:`rgtp.vit`, :mod:`rgtp.state` and :mod:`rgtp.cls_vit` lazily.
"""

from .breakdown import (
    CONVENTIONS,
    EXECUTED,
    EXECUTED_DENSE_WINDOWS,
    PAPER,
    FlopBreakdown,
    Implementation,
    executed_convention,
    implementation,
)
from .measure import (
    MeasuredFrame,
    build_pruned_vit,
    count,
    measure,
    summarize_measured,
    vitdet_frame_flops_measured,
    vivit_frame_flops_measured,
    vivit_temporal_flops_measured,
)
from .paper import (
    PAPER_ACCURACY,
    PAPER_ROWS,
    VID_VAL_FULL_FRAME_FRACTION,
    PaperRow,
    full_frame_fraction,
    row_flops,
    row_frame_flops,
    row_kept,
    schedule_average,
    vitdet_average_flops,
)
from .vitdet import VITDET_B_672, VITDET_B_1024, ViTDetSpec, vitdet_frame_flops, vitdet_rgtp_config
from .vivit import (
    VIVIT_EPIC,
    VIVIT_KINETICS,
    ViViTSpec,
    grid_pattern_count,
    vivit_frame_flops,
    vivit_step_types,
    vivit_temporal_flops,
    vivit_video_flops,
    vivit_video_from_steps,
)

__all__ = [
    "CONVENTIONS",
    "EXECUTED",
    "EXECUTED_DENSE_WINDOWS",
    "PAPER",
    "PAPER_ACCURACY",
    "PAPER_ROWS",
    "VID_VAL_FULL_FRAME_FRACTION",
    "VITDET_B_1024",
    "VITDET_B_672",
    "VIVIT_EPIC",
    "VIVIT_KINETICS",
    "FlopBreakdown",
    "Implementation",
    "MeasuredFrame",
    "PaperRow",
    "ViTDetSpec",
    "ViViTSpec",
    "build_pruned_vit",
    "count",
    "executed_convention",
    "full_frame_fraction",
    "grid_pattern_count",
    "implementation",
    "measure",
    "row_flops",
    "row_frame_flops",
    "row_kept",
    "schedule_average",
    "summarize_measured",
    "vitdet_average_flops",
    "vitdet_frame_flops",
    "vitdet_frame_flops_measured",
    "vitdet_rgtp_config",
    "vivit_frame_flops",
    "vivit_frame_flops_measured",
    "vivit_step_types",
    "vivit_temporal_flops",
    "vivit_temporal_flops_measured",
    "vivit_video_flops",
    "vivit_video_from_steps",
]
