"""The attention kernel shared by every block: softmax(q·kᵀ·scale + relative-position bias)·v, counted.

:class:`AttentionKernel` is the one place that multiplies queries with keys. It has two implementations that agree
to ~1e-6: ``sdpa`` (``scaled_dot_product_attention`` wherever the probabilities are not needed) and ``explicit``
(the straightforward softmax(QKᵀ + bias)·V everywhere; bit-identical to detectron2's ``ViT`` and, with K = N,
between dense and pruned frames). Both charge the same FLOPs to :mod:`rgtp.counting`. The decomposed relative
position of detectron2's ViTDet (:class:`RelPos`) can be given for any subset of queries of a key grid, which is
what pruned frames need (kept queries at their own positions against all keys).

:class:`Memo` holds derived tensors (resized position tables, window index maps) between frames at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import counting
from .config import ConfigError

ATTENTION_KERNELS = ("sdpa", "explicit")


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, n, C) → (B, H, n, d)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, n, d) → (B, n, C)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x[b, idx[b]]`` for ``x`` (B, N, C) and ``idx`` (B, K)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def version(t: Tensor) -> int:
    """``t._version`` (bumped by every in-place update), or −1 for an inference tensor (e.g. a parameter of a model
    built under ``torch.inference_mode``), which has no version counter: such a tensor is updated in place only
    inside inference mode, and keys built from it then do not see the update."""
    try:
        return t._version
    except RuntimeError:
        return -1


class Memo:
    """Derived tensors kept between calls at inference (keys must name everything they depend on, e.g. a
    parameter's ``_version``). Under autograd or while ``torch.compile`` traces, values are recomputed: Dynamo
    cannot read ``_version`` (the lookup would break the graph) and inductor folds the small tables anyway.
    """

    def __init__(self) -> None:
        self._store: Dict[Hashable, Tensor] = {}

    def get(self, key: Hashable, make: Callable[[], Tensor]) -> Tensor:
        """The value stored under ``key``, made by ``make()`` on the first call."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return make()
        if key not in self._store:
            self._store[key] = make()
        return self._store[key]

    def clear(self) -> None:
        """Forget every stored value."""
        self._store.clear()


@dataclass
class RelPos:
    """Decomposed relative position (detectron2 ViTDet) of queries inside a ``kh×kw`` key grid.

    ``table_h`` ``(kh, kh, d)`` and ``table_w`` ``(kw, kw, d)`` are the relative matrices (:func:`rgtp.posenc.
    relative_matrix`); ``rows``/``cols`` the query positions, ``(n,)`` or ``(B', n)``, or None when the queries are
    the whole grid in raster order. The bias of query q at (y, x) for key (i, j) is q·Rh[y, i] + q·Rw[x, j].
    """

    table_h: Tensor
    table_w: Tensor
    rows: Optional[Tensor] = None
    cols: Optional[Tensor] = None

    @property
    def key_grid(self) -> Tuple[int, int]:
        """(kh, kw)."""
        return self.table_h.shape[0], self.table_w.shape[0]

    def terms(self, q: Tensor, kernel: str, counted_rows: int) -> Tuple[Tensor, Tensor]:
        """The two bias terms for queries ``q`` (B', H, n, d), broadcastable to (B', H, n, kh, kw)."""
        b, nh, nq, d = q.shape
        kh, kw = self.key_grid
        rows, cols = self.rows, self.cols
        if (
            rows is None and kernel == "explicit"
        ):  # the straightforward path gathers rows for every query
            pos = torch.arange(nq, device=q.device)
            rows, cols = pos // kw, pos % kw
        if rows is None:  # queries are the full kh×kw grid: no row gather needed
            qg = q.view(b, nh, kh, kw, d)
            rel_h = counting.einsum(
                "bhyxd,ykd->bhyxk", qg, self.table_h, counted_rows * nh * kh * d
            )
            rel_w = counting.einsum(
                "bhyxd,xkd->bhyxk", qg, self.table_w, counted_rows * nh * kw * d
            )
            rel_h, rel_w = rel_h.reshape(b, nh, nq, kh), rel_w.reshape(b, nh, nq, kw)
        else:
            rows_h, rows_w = self.table_h[rows], self.table_w[cols]  # (n, k, d) or (B', n, k, d)
            eq = "bhnd,nkd->bhnk" if rows_h.dim() == 3 else "bhnd,bnkd->bhnk"
            rel_h = counting.einsum(eq, q, rows_h, counted_rows * nh * kh * d)
            rel_w = counting.einsum(eq, q, rows_w, counted_rows * nh * kw * d)
        return rel_h.unsqueeze(-1), rel_w.unsqueeze(-2)


class AttentionKernel:
    """Softmax attention with optional decomposed relative position, counted (see the module docstring).

    Args:
        name: ``sdpa`` or ``explicit``.
        reuse_buffers: keep one logits buffer per shape between calls at inference (one kernel per model and
            thread: the buffer is reused by the next call).
    """

    def __init__(self, name: str = "sdpa", reuse_buffers: bool = True) -> None:
        if name not in ATTENTION_KERNELS:
            raise ConfigError(f"invalid attention={name!r}: allowed {ATTENTION_KERNELS}")
        self.name = name
        self.reuse_buffers = reuse_buffers
        self._buffers: Dict[tuple, Tensor] = {}

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        scale: float,
        rel: Optional[RelPos] = None,
        need_probs: bool = False,
        counted_queries: Optional[int] = None,
        reuse_buffer: bool = True,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Attention of ``q`` (B', H, n, d) over ``k``, ``v`` (B', H, M, d): the output (B', n, H·d) and, when
        ``need_probs``, the probabilities (B', H, n, M).

        Charged: QKᵀ and AV MACs, relative einsums and two bias adds per logit, for ``counted_queries`` query rows
        (default B'·n; fewer when some rows of ``q`` are padding). ``reuse_buffer`` keeps one logits buffer per
        shape between calls at inference (fresh H×n×M buffers every frame cost more in page faults than the
        softmax on CPU); switch it off for shapes that change from frame to frame.
        """
        b, nh, nq, d = q.shape
        m = k.shape[2]
        rows = b * nq if counted_queries is None else counted_queries
        terms = rel.terms(q, self.name, rows) if rel is not None else None
        if not need_probs and self.name == "sdpa":
            counting.charge("matmul", 2 * rows * nh * m * d)
            mask = None
            if terms is not None:
                mask = (terms[0] + terms[1]).view(b, nh, nq, m)
                # one add builds the mask, one adds it to the logits inside SDPA
                counting.charge("add", 2 * rows * nh * m)
            return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), None
        inference = not torch.is_grad_enabled()
        if inference and reuse_buffer and self.reuse_buffers:
            logits = self._buffer((b, nh, nq, m), q.dtype, q.device)
            torch.matmul(q * scale, k.transpose(-1, -2), out=logits)
        else:
            logits = torch.matmul(q * scale, k.transpose(-1, -2))
        counting.charge("matmul", rows * nh * m * d)
        if terms is not None:
            grid_logits = logits.view(b, nh, nq, terms[0].shape[-2], terms[1].shape[-1])
            grid_logits.add_(terms[0]).add_(terms[1])
            counting.charge("add", 2 * rows * nh * m)
        if inference:  # in place, same values as softmax()
            probs = torch._softmax(logits, -1, False, out=logits)
        else:
            probs = logits.softmax(dim=-1)
        counting.charge("matmul", rows * nh * m * d)
        return merge_heads(torch.matmul(probs, v)), probs if need_probs else None

    def _buffer(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (shape, dtype, device)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def clear(self) -> None:
        """Release the reusable buffers."""
        self._buffers.clear()
