import math

import pytest
import torch

from powersweep.proxy_models.perf import matmul_peak_flops, measure_matmul_flops, mfu


def test_mfu_is_six_flops_per_parameter_and_token_over_the_peak():
    assert mfu(1_000_000, 10_000, 1.2e11) == 6 * 1_000_000 * 10_000 / 1.2e11
    assert mfu(2_000_000, 10_000, 1.2e11) == 2 * mfu(1_000_000, 10_000, 1.2e11)


def test_measured_matmul_flops_are_a_rate_and_the_peak_is_measured_once():
    flops = measure_matmul_flops("cpu", torch.float32, size=128, calls=3)
    assert math.isfinite(flops) and 1e6 < flops < 1e14  # a real CPU, not a timer artefact
    assert matmul_peak_flops("cpu", torch.float32, 128) == matmul_peak_flops("cpu", torch.float32, 128)


def test_utilisation_is_never_above_one_even_against_a_peak_measured_low():
    from powersweep.proxy_models.perf import utilisation

    fake_peak = 1e9  # far below what 6 * 1e8 * 1e4 FLOP/s would need
    assert mfu(100_000_000, 10_000, fake_peak) == 1.0
    assert utilisation(275e6, 1e6, fake_peak) == 1.0
    assert utilisation(275e6, 1e6, 989e12) == pytest.approx(275e6 * 1e6 / 989e12)
    assert math.isnan(mfu(1000, math.nan, 1e9))  # nothing timed: no rate, not a full chip


def test_attention_flops_put_paper_12m_at_about_275_mflop_per_token():
    from powersweep.proxy_models.perf import attention_flops_per_token
    from powersweep.proxy_models.shapes import get_preset

    cfg = get_preset("paper-12m")
    attention = attention_flops_per_token(cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.seq_len)
    assert attention == 12 * 32 * 2 * 64 * 4096
    assert 6 * cfg.num_params() + attention == pytest.approx(275e6, rel=0.02)


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_bf16_peak_of_known_chips(name, peak):
    from powersweep.proxy_models.perf import table_peak_flops

    assert table_peak_flops(name) == peak


def test_compute_dtype_is_bf16_on_cuda_by_default_and_the_run_dtype_elsewhere():
    from powersweep.proxy_models.perf import compute_dtype

    assert compute_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    assert compute_dtype(torch.device("cpu"), "auto") == torch.float32
    assert compute_dtype(torch.device("cpu"), "float64") == torch.float64
    assert compute_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
