"""Where a run computes and in what precision: the device, and bfloat16 autocast where it is native.

``precision="auto"`` picks bfloat16 autocast where the hardware has native bfloat16 arithmetic
(CUDA; a CPU with AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions and matmuls about 1.5x
faster than float32) and float32 elsewhere (emulated bf16 would be slower than float32). The losses
promote to float32 whatever the network ran in.
"""
from __future__ import annotations

import torch

#: ``TrainConfig.precision`` values; a config stores the resolved one ("fp32" or "bf16").
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but is not available (use 'auto' or 'cpu')")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: absent on some builds
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or for ``"auto"`` what ``device`` runs natively."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision
