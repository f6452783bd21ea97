"""Logit maps ``l(s)``: cosine similarity to logit. Each map also writes its SymPy expression
(:meth:`LogitMap.symbolic`): the one definition :mod:`clmini.symbolic` derives from."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clmini.losses.core import _check_bool, _positive_number, _promote, _temperature
from clmini.losses.rowwise import Scratch


class _Logits(torch.autograd.Function):
    """``l(s)`` for a whole tensor through the map's own ``logits_``/``slope_``: the same value and
    derivative the fused row reductions compute block by block."""

    @staticmethod
    def forward(ctx, s: Tensor, logit_map: LogitMap) -> Tensor:
        ctx.logit_map = logit_map
        ctx.save_for_backward(s)
        return logit_map.logits_(s, torch.empty_like(s))

    @staticmethod
    def backward(ctx, grad: Tensor):
        (s,) = ctx.saved_tensors
        scratch = Scratch(torch.empty_like(s), torch.empty_like(s, dtype=torch.bool))
        return ctx.logit_map.slope_(s, grad.clone(), scratch), None


# --------------------------------------------------------------------------- logit maps
class LogitMap(nn.Module):
    """An element-wise map from cosine similarity to logit, with its SymPy expression.

    ``symbolic(s)`` (a static method: the form, not the instance) returns ``l(s)`` in terms of a
    SymPy expression ``s`` and the map's parameter symbols (``tau``, ``tau_min``, ``tau_max``, the
    symbols of :mod:`clmini.symbolic`); ``symbol_values()`` gives this instance's values, so
    ``symbolic(s).subs(self.symbol_values())`` is the exact function ``forward`` computes (up to
    the numerical clamp of :class:`Artanh`). This is the one definition of each map's formula:
    :mod:`clmini.symbolic` derives from it.

    Numerically a map is two in-place methods, which the fused row reductions of
    :mod:`clmini.losses.rowwise` call on each block of rows (so they should not allocate ``[B, N]``
    tensors, which costs page faults on every block; ``scratch`` holds a float and a bool buffer of
    the block's shape):

    * ``logits_(s, out) -> out``: ``l(s)`` written into ``out``;
    * ``slope_(s, grad, scratch) -> grad``: ``grad`` multiplied in place by ``dl/ds``.

    ``forward`` (``l(s)`` with autograd, on half precision promoted to float32) is built on them.
    """

    def forward(self, s: Tensor) -> Tensor:
        return _Logits.apply(_promote(s), self)

    def logits_(self, s: Tensor, out: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def slope_(self, s: Tensor, grad: Tensor, scratch: Scratch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def symbolic(s):  # pragma: no cover - abstract
        raise NotImplementedError

    def symbol_values(self) -> dict:
        return {}


class Scaled(LogitMap):
    """``l(s) = s / tau``: the classic temperature (at least :data:`clmini.losses.core.MIN_TEMPERATURE`)."""

    def __init__(self, temperature: float, name: str = "temperature"):
        super().__init__()
        self.temperature = _temperature(name, temperature)

    def logits_(self, s: Tensor, out: Tensor) -> Tensor:
        return torch.div(s, self.temperature, out=out)

    def slope_(self, s: Tensor, grad: Tensor, scratch: Scratch) -> Tensor:
        return grad.div_(self.temperature)

    @staticmethod
    def symbolic(s):
        import sympy
        return s / sympy.Symbol("tau", positive=True)

    def symbol_values(self) -> dict:
        import sympy
        return {sympy.Symbol("tau", positive=True): self.temperature}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class Artanh(LogitMap):
    """``l(s) = 2 artanh(s) = log((1 + s) / (1 - s))``: temperature-free (Kim & Kim 2025).

    ``artanh(+-1)`` is infinite, so ``s`` is clamped to ``[-1 + eps, 1 - eps]`` (the clamp also
    zeroes the gradient beyond it, where the loss has reached its optimum). Computed in at least
    float32: in fp16, ``1 - 1e-4`` already rounds back to ``1``.

    ``1 - eps`` must stay below 1 in the dtype the loss computes in, i.e. ``eps >= finfo.eps / 2``
    (:meth:`smallest_eps`: 5.96e-08 in float32, the dtype of float32 and half-precision inputs;
    1.11e-16 in float64); a smaller ``eps`` is refused there (a ``ValueError``), as it would clamp
    to ``artanh(1) = inf``. Below float64's bound it is refused at construction.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        eps = _positive_number("eps", eps)
        if eps >= 1:
            raise ValueError(f"eps must be in (0, 1), got {eps!r}")
        self.eps = eps
        self._check_eps(torch.float64)

    @staticmethod
    def smallest_eps(dtype: torch.dtype) -> float:
        """The smallest ``eps`` for which ``1 - eps`` (and ``-1 + eps``) rounds to below 1 in ``dtype``:
        the spacing of ``dtype`` just below 1."""
        return torch.finfo(dtype).eps / 2

    def _check_eps(self, dtype: torch.dtype) -> None:
        smallest = self.smallest_eps(dtype)
        if self.eps < smallest:
            raise ValueError(f"eps must be >= {smallest:.6g} in {dtype} (the smallest usable value: "
                             f"1 - eps rounds to 1 below it), got eps={self.eps!r}")

    def _bound(self, s: Tensor) -> float:
        self._check_eps(_promote(s).dtype)  # a comparison of two Python floats per block
        return 1 - self.eps

    def logits_(self, s: Tensor, out: Tensor) -> Tensor:
        bound = self._bound(s)
        return torch.clamp(s, -bound, bound, out=out).atanh_().mul_(2)

    def slope_(self, s: Tensor, grad: Tensor, scratch: Scratch) -> Tensor:
        """``2 / (1 - c^2)`` at the clamped ``c``, and 0 where the clamp was active (as autograd's)."""
        bound = self._bound(s)
        clamped = torch.clamp(s, -bound, bound, out=scratch.floats)
        outside = torch.ne(clamped, s, out=scratch.flags)
        return grad.mul_(2).div_(clamped.square_().neg_().add_(1)).masked_fill_(outside, 0.0)

    @staticmethod
    def symbolic(s):
        import sympy
        return 2 * sympy.atanh(s)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class CosineTemperature(LogitMap):
    """DySTreSS (Manna et al.): ``l(s) = s / tau(sg[s])`` with a cosine schedule in ``s``.

    ``tau(s) = tau_min + (tau_max - tau_min) / 2 * (1 + cos(pi (1 + s)))
            = tau_min + (tau_max - tau_min) sin^2(pi s / 2)``:
    ``tau_max`` at ``s = +-1``, ``tau_min`` at ``s = 0``. Like the authors' code, ``tau`` is computed
    from detached similarities (``detach=True``) and applied to every logit, the positive included.
    """

    def __init__(self, tau_min: float = 0.07, tau_max: float = 0.2, detach: bool = True):
        super().__init__()
        self.tau_min = _temperature("tau_min", tau_min)
        self.tau_max = _temperature("tau_max", tau_max)
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got tau_min={tau_min!r} > tau_max={tau_max!r}")
        self.detach = _check_bool("detach", detach)

    def temperature(self, s: Tensor) -> Tensor:
        """The per-pair temperature ``tau(s)`` (what the loss applies)."""
        return self._temperature_(s)

    def _temperature_(self, s: Tensor, out: Tensor | None = None) -> Tensor:
        """``tau(s) = tau_min + (tau_max - tau_min) sin^2(pi s / 2)`` into ``out`` (new if ``None``)."""
        sin2 = torch.mul(s, 0.5 * math.pi, out=out).sin_().square_()
        return sin2.mul_(self.tau_max - self.tau_min).add_(self.tau_min)

    def logits_(self, s: Tensor, out: Tensor) -> Tensor:
        return torch.div(s, self._temperature_(s, out), out=out)

    def slope_(self, s: Tensor, grad: Tensor, scratch: Scratch) -> Tensor:
        """``1 / tau(s)`` with ``detach`` (tau is a constant of the gradient); else
        ``(tau - s tau'(s)) / tau^2`` with ``tau'(s) = (tau_max - tau_min) (pi / 2) sin(pi s)``."""
        tau = self._temperature_(s, scratch.floats)
        if self.detach:
            return grad.div_(tau)
        # (the ablation without detach allocates its tau'; the paper's loss does not come here)
        dtau = torch.mul(s, math.pi).sin_().mul_(0.5 * math.pi * (self.tau_max - self.tau_min))
        # divided by tau twice rather than by tau^2, which underflows to 0 for tau below ~1e-19 in float32
        return grad.div_(tau).mul_(dtau.mul_(s).neg_().add_(tau)).div_(tau)

    @staticmethod
    def symbolic_temperature(s):
        """``tau(s)`` as the paper writes it: ``tau_min + (tau_max - tau_min)/2 (1 + cos(pi (1 + s)))``."""
        import sympy
        tau_min, tau_max = sympy.symbols("tau_min tau_max", positive=True)
        # ``(tau_max - tau_min) * (...) / 2`` keeps the paper's 1/2 outside (SymPy would distribute it).
        return tau_min + (tau_max - tau_min) * (1 + sympy.cos(sympy.pi * (1 + s))) / 2

    @staticmethod
    def symbolic(s):
        return s / CosineTemperature.symbolic_temperature(s)

    def symbol_values(self) -> dict:
        import sympy
        tau_min, tau_max = sympy.symbols("tau_min tau_max", positive=True)
        return {tau_min: self.tau_min, tau_max: self.tau_max}

    def extra_repr(self) -> str:
        return f"tau_min={self.tau_min}, tau_max={self.tau_max}, detach={self.detach}"
