"""FLOP counting by execution, with the paper's conventions (docs/method.md §5.1).

Model code calls the counted operations of this module (:func:`linear`, :func:`matmul`, :func:`einsum`,
:func:`add`) instead of the plain torch ones, and :func:`charge` for fused kernels such as
``scaled_dot_product_attention``. Outside a :class:`FlopCounter` they cost one
context-variable lookup; inside one they add their multiply-accumulates (one MAC = one FLOP) to two tallies:

* ``executed``: what our implementation runs;
* ``paper``: what the official implementation runs and the paper charges. Work the official code does but we skip
  (windowed attention and relative-position terms at full N on pruned frames, §9.1) is charged to this tally alone
  with :func:`charge_paper_only`.

Only shapes are used, so counting works on the ``meta`` device: a full-size ViT-B at 1024 counts in well under a
second. Not counted (as in the paper): patch embedding, LayerNorm, softmax, GELU, the q scaling, pooling,
interpolation, gather/scatter/sort, and everything outside the backbone.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CATEGORIES = ("linear", "bias", "matmul", "einsum", "add")


@dataclass
class FlopTally:
    """FLOPs per category (linear MACs, bias adds, matmul MACs, relative-position einsum MACs, tensor adds)."""

    counts: Dict[str, int] = field(default_factory=lambda: {c: 0 for c in CATEGORIES})

    @property
    def total(self) -> int:
        """The plain sum of all categories, the number the paper reports."""
        return sum(self.counts.values())

    def add(self, category: str, n: int) -> None:
        """Add ``n`` FLOPs to ``category``."""
        self.counts[category] += int(n)


_Counter = TypeVar("_Counter", bound="ScopedCounter")


class ScopedCounter:
    """Base of counters that are active inside a ``with`` block: entering makes the counter the current one of its
    kind (the class's context variable ``_var``), leaving restores the one before (counters nest, and each thread
    or task has its own)."""

    _var: ClassVar[contextvars.ContextVar]

    def __enter__(self: _Counter) -> _Counter:
        self._token = self._var.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        token = getattr(self, "_token", None)
        assert token is not None, "left a counter that was not entered"
        self._var.reset(token)
        self._token = None


class FlopCounter(ScopedCounter):
    """Context manager that tallies counted operations run inside it.

    Example::

        with FlopCounter() as counter:
            model(x)
        counter.paper.total, counter.executed.total
    """

    _var: ClassVar[contextvars.ContextVar] = contextvars.ContextVar("rgtp_flops", default=None)

    def __init__(self) -> None:
        self.executed = FlopTally()
        self.paper = FlopTally()

    def charge(self, category: str, n: int, paper: bool = True, executed: bool = True) -> None:
        """Add ``n`` FLOPs of ``category`` to the chosen tallies."""
        if executed:
            self.executed.add(category, n)
        if paper:
            self.paper.add(category, n)


_ACTIVE: contextvars.ContextVar[Optional[FlopCounter]] = FlopCounter._var


def active_counter() -> Optional[FlopCounter]:
    """The innermost active :class:`FlopCounter`, or None."""
    return _ACTIVE.get()


def charge(category: str, n: int) -> None:
    """Charge ``n`` FLOPs executed by our code (and by the official code) to the active counter, if any."""
    c = _ACTIVE.get()
    if c is not None:
        c.charge(category, n)


def charge_paper_only(category: str, n: int) -> None:
    """Charge work the official implementation executes but ours skips (paper-convention tally only)."""
    c = _ACTIVE.get()
    if c is not None:
        c.charge(category, n, executed=False)


def linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(x)``, counting rows·in·out MACs as linear and rows·out bias adds."""
    c = _ACTIVE.get()
    if c is not None:
        rows = x.numel() // layer.in_features
        c.charge("linear", rows * layer.in_features * layer.out_features)
        if layer.bias is not None:
            c.charge("bias", rows * layer.out_features)
    return F.linear(x, layer.weight, layer.bias)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``, counting out-numel × inner-dimension MACs."""
    out = a @ b
    c = _ACTIVE.get()
    if c is not None:
        c.charge("matmul", out.numel() * a.shape[-1])
    return out


def einsum(equation: str, a: Tensor, b: Tensor, macs: int) -> Tensor:
    """``torch.einsum(equation, a, b)`` counted as ``macs`` einsum MACs (given by the caller, who knows them)."""
    charge("einsum", macs)
    return torch.einsum(equation, a, b)


def add(a: Tensor, b: Tensor) -> Tensor:
    """``a + b``, counting one FLOP per output element."""
    out = a + b
    charge("add", out.numel())
    return out


def add_(a: Tensor, b: Tensor) -> Tensor:
    """In-place ``a += b``, counting one FLOP per element of ``a``."""
    charge("add", a.numel())
    return a.add_(b)
