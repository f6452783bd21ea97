"""Logit maps ``l(s)``: cosine similarity to logit. Each map also writes its SymPy expression
(:meth:`LogitMap.symbolic`): the one definition :mod:`clmini.symbolic` derives from."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clmini.losses.core import _positive_number, _promote


# --------------------------------------------------------------------------- logit maps
class LogitMap(nn.Module):
    """An element-wise map from cosine similarity to logit, with its SymPy expression.

    ``symbolic(s)`` (a static method: the form, not the instance) returns ``l(s)`` in terms of a
    SymPy expression ``s`` and the map's parameter symbols (``tau``, ``tau_min``, ``tau_max``, the
    symbols of :mod:`clmini.symbolic`); ``symbol_values()`` gives this instance's values, so
    ``symbolic(s).subs(self.symbol_values())`` is the exact function ``forward`` computes (up to
    the numerical clamp of :class:`Artanh`). This is the one definition of each map's formula:
    :mod:`clmini.symbolic` derives from it.
    """

    @staticmethod
    def symbolic(s):  # pragma: no cover - abstract
        raise NotImplementedError

    def symbol_values(self) -> dict:
        return {}


class Scaled(LogitMap):
    """``l(s) = s / tau``: the classic temperature."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = _positive_number("temperature", temperature)

    def forward(self, s: Tensor) -> Tensor:
        return s / self.temperature

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
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        eps = _positive_number("eps", eps)
        if eps >= 1:
            raise ValueError(f"eps must be in (0, 1), got {eps!r}")
        self.eps = eps

    def forward(self, s: Tensor) -> Tensor:
        return 2 * torch.atanh(_promote(s).clamp(-1 + self.eps, 1 - self.eps))

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
        self.tau_min = _positive_number("tau_min", tau_min)
        self.tau_max = _positive_number("tau_max", tau_max)
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got tau_min={tau_min!r} > tau_max={tau_max!r}")
        self.detach = bool(detach)

    def temperature(self, s: Tensor) -> Tensor:
        """The per-pair temperature ``tau(s)`` (what the loss applies)."""
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sin(0.5 * math.pi * s) ** 2

    def forward(self, s: Tensor) -> Tensor:
        return s / self.temperature(s.detach() if self.detach else s)

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
