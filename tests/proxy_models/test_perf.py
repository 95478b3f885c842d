import math

import torch

from proxy_models.perf import matmul_peak_flops, measure_matmul_flops, mfu


def test_mfu_is_six_flops_per_parameter_and_token_over_the_peak():
    assert mfu(1_000_000, 10_000, 1.2e11) == 6 * 1_000_000 * 10_000 / 1.2e11
    assert mfu(2_000_000, 10_000, 1.2e11) == 2 * mfu(1_000_000, 10_000, 1.2e11)


def test_measured_matmul_flops_are_a_rate_and_the_peak_is_measured_once():
    flops = measure_matmul_flops("cpu", torch.float32, size=128, calls=3)
    assert math.isfinite(flops) and 1e6 < flops < 1e14  # a real CPU, not a timer artefact
    assert matmul_peak_flops("cpu", torch.float32, 128) == matmul_peak_flops("cpu", torch.float32, 128)
