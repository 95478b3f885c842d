from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from powersweep.proxy_models import memory
from powersweep.proxy_models.memory import (
    GIB,
    choose_micro_batch,
    device_budget,
    parse_bytes,
    step_memory,
    trunk_copy_bytes,
)
from powersweep.proxy_models.packed import PackedTrainer
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError, get_preset
from powersweep.proxy_models.trainer import TrainConfig, Trainer
from powersweep.sweeps.plan import memory_table, plan
from powersweep.sweeps.spec import load_spec

SPECS = Path(__file__).parents[2] / "sweeps" / "specs"


@pytest.mark.parametrize("preset, measured_gib", [("paper-12m", 11.9), ("paper-121m", 48.5)])
def test_estimate_is_near_the_peaks_measured_on_an_h100(preset, measured_gib, monkeypatch):
    # Peak GPU memory of one step at 16 x 4096 measured on one H100 80GB (bf16 autocast, eager, liger-kernel's
    # fused linear cross-entropy with its own chunking, chunk_mem_const 1); the estimate must stay within 10%
    # so that a budget means something.
    monkeypatch.setattr(memory, "FUSED_CHUNK_BYTES", 1)  # the fewest rows per chunk: liger's own chunking
    estimate = step_memory(get_preset(preset), micro_batch_size=16).peak / GIB
    assert estimate == pytest.approx(measured_gib, rel=0.10)


def test_memory_grows_with_the_micro_batch_and_shrinks_with_checkpointing_and_chunking():
    cfg = get_preset("paper-36m")
    one, two = (step_memory(cfg, micro_batch_size=m).peak for m in (1, 2))
    assert one < two < 2 * one + step_memory(cfg, micro_batch_size=1).state
    checkpointed, plain = (
        step_memory(cfg, micro_batch_size=8, activation_checkpointing=on) for on in (True, False)
    )
    assert checkpointed.activations < plain.activations / 4  # 32 layers: each keeps its input, one recomputes
    assert checkpointed.peak < plain.peak / 3
    full = step_memory(cfg, micro_batch_size=4, head="full")
    assert full.head > 20 * step_memory(cfg, micro_batch_size=4, head="chunked").head


def test_the_estimate_counts_the_head_that_auto_runs():
    big = get_preset("paper-12m")
    small = replace(big, vocab_size=256)  # the GPU main job's model, on the embedded corpus's bytes
    for cfg, path in ((small, "full"), (big, "fused")):
        auto = step_memory(cfg, micro_batch_size=16, variants=8)
        assert auto == step_memory(cfg, micro_batch_size=16, head=path, variants=8), path
    without_liger = step_memory(big, micro_batch_size=16, fused_head=False)
    assert without_liger == step_memory(big, micro_batch_size=16, head="chunked")
    # the full head keeps every variant's logits for backward: more than the fused head's buffers
    fused = step_memory(small, micro_batch_size=16, head="fused", variants=8)
    assert fused.head < step_memory(small, micro_batch_size=16, variants=8).head


def test_choice_is_the_largest_divisor_that_fits_then_checkpointing():
    cfg = get_preset("paper-121m")
    peak = {m: step_memory(cfg, micro_batch_size=m).peak for m in (1, 2, 3, 4, 6, 12)}
    choice = choose_micro_batch(cfg, batch_size=12, budget_bytes=peak[4] + 1)
    # 6 does not fit, 5 not a divisor
    assert choice.micro_batch_size == 4 and not choice.activation_checkpointing
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


@pytest.mark.parametrize(
    "text, expected",
    [("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("512 MiB", 2**29), ("1e9", 10**9), ("1.5GiB", 3 * 2**29)],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["80XB", "GiB", "", "-1GiB"])
def test_parse_bytes_rejects_with_the_value(text):
    with pytest.raises(ConfigError, match="memory size"):
        parse_bytes(text)


def test_fused_head_chunks_are_few_and_fit_their_bytes():
    # paper-12m (d_model 128): liger's own chunking makes V / d = 384 chunks of a step; FUSED_CHUNK_BYTES a
    # few.
    v, d = 49152, 128
    for tokens in (16 * 1024, 16 * 4096, 64 * 4096):
        c, rows = memory.fused_chunking(tokens, v, d, compute_bytes=2)
        assert rows * v * 2 <= memory.FUSED_CHUNK_BYTES < 2 * rows * v * 2 or rows == tokens
        assert -(-tokens // rows) <= 2 * tokens * v * 2 // memory.FUSED_CHUNK_BYTES + 1
    assert memory.fused_chunking(1000, v, d, compute_bytes=2) == (384, 1000)  # one chunk: all rows at once


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.integers(1, 2**20),
    vocab=st.integers(2, 2**17),
    d=st.integers(8, 2048),
    limit=st.integers(1, 2**32),
)
def test_fused_chunking_takes_the_largest_chunk_mem_const_that_fits(tokens, vocab, d, limit):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memory, "FUSED_CHUNK_BYTES", limit)
        c, rows = memory.fused_chunking(tokens, vocab, d, compute_bytes=2)
    most = max(1, limit // (vocab * 2))
    assert 1 <= c <= -(-vocab // d) and 1 <= rows <= tokens
    assert rows & (rows - 1) == 0 or rows == tokens  # a power of two, or every row
    if c > 1:
        assert rows <= most
    if c < -(-vocab // d):  # one more would not fit (or would be the same chunk)
        assert memory._liger_chunk_rows(tokens, vocab, d, c + 1) > most


def test_packed_variants_hold_their_head_gradients_but_share_one_chunk_of_logits():
    # The K heads run one after another: each keeps (tokens, d) and (V, d) gradients; the logits are freed.
    cfg = get_preset("paper-12m")
    solo, packed = (step_memory(cfg, micro_batch_size=16, variants=k).head for k in (1, 8))
    tokens, held = 16 * cfg.seq_len, 16 * cfg.seq_len * cfg.d_model * 2 + cfg.vocab_size * cfg.d_model * 4
    _, chunk = memory.fused_chunking(tokens, cfg.vocab_size, cfg.d_model, compute_bytes=2)
    assert solo == held + 2 * chunk * cfg.vocab_size * 2 and packed == solo + 7 * held


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (dict, list, tuple)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _tensors(v)


@pytest.mark.parametrize("variants", [1, 3])
def test_the_trunk_copy_is_what_a_lineage_copies_at_a_fork(corpus, variants):
    """The state a lineage deep-copies at each fork and holds while the branch decays: weights and both AdamW
    moments of every variant (and the optimizer's 0-d step counters of a solo run)."""
    cfg = TrainConfig(
        model="cpu-xs",
        model_overrides={"seq_len": 32},
        batch_size=2,
        tokens=128,
        schedule=ScheduleConfig(name="constant", lr=1e-3),
    )
    schedules = [cfg.schedule] * variants
    trainer = Trainer(cfg, corpus=corpus) if variants == 1 else PackedTrainer(cfg, schedules, corpus=corpus)
    trainer.train_to(1, total_tokens=None)  # AdamW's moments exist from the first step
    held = sum(t.numel() * t.element_size() for t in _tensors(trainer.state_dict()) if t.dim() > 0)
    assert held == trunk_copy_bytes(cfg.proxy, variants=variants)
