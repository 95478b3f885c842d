"""Hardware facts for a run: device name, measured matmul peak, and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import functools
import time

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine; use device='cpu'")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@functools.cache
def matmul_peak_flops(device_type: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 1024) -> float:
    """Best FLOP/s of one square matmul over 20 timed calls in this process: the denominator of MFU."""
    return measure_matmul_flops(device_type, dtype, size=size, calls=20)


def measure_matmul_flops(device_type: str = "cpu", dtype: torch.dtype = torch.float32, *, size: int = 1024,
                         calls: int = 20) -> float:
    """Best FLOP/s of one square matmul over `calls` timed calls, measured now (not cached).

    Best-of rather than mean: a busy machine only ever slows a call down, never speeds it up. On a machine
    whose speed drifts (shared hosts), measure it next to the work it is the denominator for.
    """
    device = torch.device(device_type)
    if device.type == "cuda":
        size = max(size, 8192)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: threads, allocator, kernel selection
    best = float("inf")
    for _ in range(calls):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mfu(n_params: int, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: 6 * N * tokens/s (forward + backward matmuls) over the peak."""
    return 6 * n_params * tokens_per_s / peak_flops
