from pathlib import Path

import pytest

from proxy_models.config import ConfigError, get_preset
from proxy_models.memory import GIB, choose_micro_batch, device_budget, parse_bytes, step_memory
from sweeps.plan import memory_table, plan
from sweeps.spec import load_spec

SPECS = Path(__file__).parents[2] / "sweeps" / "specs"


@pytest.mark.parametrize("preset, measured_gib", [("paper-12m", 11.9), ("paper-121m", 48.5)])
def test_estimate_is_near_the_peaks_measured_on_an_h100(preset, measured_gib):
    # Peak GPU memory of one step at 16 x 4096 measured on one H100 80GB (bf16 autocast, liger-kernel's
    # fused linear cross-entropy); the estimate must stay within 10% so that a budget means something.
    estimate = step_memory(get_preset(preset), micro_batch_size=16).peak / GIB
    assert estimate == pytest.approx(measured_gib, rel=0.10)


def test_memory_grows_with_the_micro_batch_and_shrinks_with_checkpointing_and_chunking():
    cfg = get_preset("paper-36m")
    one, two = (step_memory(cfg, micro_batch_size=m).peak for m in (1, 2))
    assert one < two < 2 * one + step_memory(cfg, micro_batch_size=1).state
    assert step_memory(cfg, micro_batch_size=8, activation_checkpointing=True).peak < step_memory(
        cfg, micro_batch_size=8).peak / 4
    full = step_memory(cfg, micro_batch_size=4, head="full")
    assert full.head > 20 * step_memory(cfg, micro_batch_size=4, head="chunked").head


def test_choice_is_the_largest_divisor_that_fits_then_checkpointing():
    cfg = get_preset("paper-121m")
    peak = {m: step_memory(cfg, micro_batch_size=m).peak for m in (1, 2, 3, 4, 6, 12)}
    choice = choose_micro_batch(cfg, batch_size=12, budget_bytes=peak[4] + 1)
    assert choice.micro_batch_size == 4 and not choice.activation_checkpointing  # 6 does not fit, 5 not a divisor
    assert choose_micro_batch(cfg, batch_size=12, budget_bytes=peak[4] - 1).micro_batch_size == 3
    tight = choose_micro_batch(cfg, batch_size=12, budget_bytes=peak[1] - 1)
    assert tight.activation_checkpointing and tight.memory.peak < peak[1]
    with pytest.raises(ConfigError, match="memory budget"):
        choose_micro_batch(cfg, batch_size=12, budget_bytes=peak[1] - 1, checkpointing="off")


def test_every_cell_of_the_paper_grid_fits_an_80gb_gpu():
    rows = memory_table(plan(load_spec(str(SPECS / "paper-wsd.yaml"))), gpu_bytes=parse_bytes("80GB"))
    assert len(rows) == 3 * 6
    budget = device_budget(80 * 10**9) / GIB
    for row in rows:
        assert row["batch_size"] % row["micro_batch_size"] == 0
        assert row["peak_gib"] <= budget < 80 * 10**9 / GIB, row


@pytest.mark.parametrize("text, expected", [("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("512 MiB", 2**29),
                                            ("1e9", 10**9), ("1.5GiB", 3 * 2**29)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["80XB", "GiB", "", "-1GiB"])
def test_parse_bytes_rejects_with_the_value(text):
    with pytest.raises(ConfigError, match="memory size"):
        parse_bytes(text)
