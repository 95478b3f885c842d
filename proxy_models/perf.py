"""Hardware facts for a run: device name, the matmul peak of the run's precision, and FLOPs utilisation.

`mfu` counts 6N FLOPs per token (forward and backward matmuls of every parameter, the tied head once);
`mfu_attention` adds the attention score and value matmuls, 12 * layers * heads * d_head * seq_len per
token (PaLM, Chowdhery et al. 2022, appendix B: the whole T x T square, as most reports count it).
The peak is that of the precision the run computes in: bf16 dense tensor-core FLOP/s on CUDA (from the
vendor's table for known chips, else measured), fp32 measured on CPU.
"""

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
def matmul_peak_flops(
    device_type: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 1024
) -> float:
    """Best FLOP/s of one square matmul over 20 timed calls in this process: the denominator of MFU."""
    return measure_matmul_flops(device_type, dtype, size=size, calls=20)


def measure_matmul_flops(
    device_type: str = "cpu", dtype: torch.dtype = torch.float32, *, size: int = 1024, calls: int = 20
) -> float:
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


# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets; matched by substring of
# torch.cuda.get_device_name, most specific first. H100 PCIe and SXM differ (756 vs 989 TFLOP/s).
BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
)


def table_peak_flops(name: str) -> float | None:
    """The data-sheet dense bf16 peak of the CUDA device `name`, or None when the chip is not listed."""
    return next((peak for key, peak in BF16_PEAKS if key in name), None)


def compute_dtype(device: torch.device, dtype: str) -> torch.dtype:
    """The dtype the run's matmuls compute in:
    bf16 under autocast ('auto' on CUDA, 'bfloat16'), else its own."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return {"float64": torch.float64}.get(dtype, torch.float32)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The matmul peak of `dtype` on `device`:
    the data sheet's for known CUDA chips in bf16, else measured."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        listed = table_peak_flops(torch.cuda.get_device_name(device))
        if listed is not None:
            return listed
    return matmul_peak_flops(device.type, dtype)


def attention_flops_per_token(n_layers: int, n_heads: int, d_head: int, seq_len: int) -> int:
    """Forward + backward FLOPs of q k^T and p v per token: 12 * layers * heads * d_head * seq_len."""
    return 12 * n_layers * n_heads * d_head * seq_len


def layer_seconds(proxy, tokens: int, peak: float) -> float:
    """Seconds one layer's forward and backward of `tokens` tokens would take at `peak` FLOP/s: 6 FLOPs per
    parameter of the layers and attention's FLOPs per token (`attention_flops_per_token`), over the layers."""
    flops = 6 * proxy.num_params(active=True, embedding=False)
    flops += attention_flops_per_token(proxy.n_layers, proxy.n_heads, proxy.d_head, proxy.seq_len)
    return flops * tokens / proxy.n_layers / peak


def utilisation(flops_per_token: float, tokens_per_s: float, peak: float) -> float:
    """Achieved FLOP/s over the peak, never above 1: a rate above the peak means the peak was measured low
    (a busy host), and what was achieved is then the best estimate of the peak."""
    value = flops_per_token * tokens_per_s / peak
    return 1.0 if value > 1.0 else value  # nan (no tokens timed) stays nan


def mfu(n_params: int, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: 6 * N * tokens/s (forward + backward matmuls) over the peak, at most 1."""
    return utilisation(6 * n_params, tokens_per_s, peak_flops)
