import json
import math

import pytest
import torch

from powersweep.proxy_models.data import DataConfig
from powersweep.proxy_models.model import ProxyLM
from powersweep.proxy_models.packed import PackedTrainer
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError
from powersweep.proxy_models.trainer import TrainConfig, Trainer

STEPS = 12
# float64. Gradients agree to 1e-16, but Adam's first steps divide tiny gradients by their own size, which
# lifts rounding to about 1e-9 after a few steps (and to chaos at lrs near divergence, so the lrs here stay
# below that). A wrong lr, clip or mask would show at 1e-3 or more.
REL = 1e-7


def config(**kwargs) -> TrainConfig:
    base = dict(
        model="cpu-xs",
        model_overrides={"seq_len": 32, "n_layers": 2},
        batch_size=4,
        tokens=4 * 32 * STEPS,
        dtype="float64",
        log_every_steps=STEPS,
        data=DataConfig(eval_tokens=2048),
        schedule=ScheduleConfig(name="wsd", lr=1e-2, warmup_tokens=4 * 32 * 2),
    )
    return TrainConfig(**{**base, **kwargs})


def solo(cfg: TrainConfig, schedule: ScheduleConfig, corpus):
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "schedule": schedule}), corpus=corpus)
    return trainer, trainer.run()


def test_each_packed_variant_equals_its_solo_run(corpus):
    cfg = config(grad_clip=0.05)  # small clip: per-variant clipping is active on most steps
    schedules = [ScheduleConfig(name="wsd", lr=lr, warmup_tokens=4 * 32 * 2) for lr in (1e-3, 3e-3, 1e-2)]
    packed = PackedTrainer(cfg, schedules, corpus=corpus)
    packed.train()
    trajectories = packed.loss_windows
    for i, (schedule, row) in enumerate(zip(schedules, packed.results())):
        trainer, expected = solo(cfg, schedule, corpus)
        assert trajectories[i] == pytest.approx(trainer.recent_losses, rel=REL)
        assert row.loss_eval == pytest.approx(expected.loss_eval, rel=REL)
        assert row.lr == schedule.lr and row.status == "ok"


def test_variants_of_several_seeds_each_equal_their_solo_run(corpus):
    """Each variant starts from its seed's initial weights and trains on its seed's batches, micro-batches
    included: packing lineages of several seeds changes none of their rows."""
    cfg = config(micro_batch_size=2)
    lrs, seeds = (1e-3, 3e-3, 3e-3, 1e-2), (1, 0, 1, 2)
    schedules = [ScheduleConfig(name="wsd", lr=lr, warmup_tokens=4 * 32 * 2) for lr in lrs]
    packed = PackedTrainer(cfg, schedules, seeds=seeds, corpus=corpus)
    initial = packed.engine.flat.clone()
    x, _ = packed._batch()
    assert x.shape == (4, 4, 32) and torch.equal(x[0], x[2]) and not torch.equal(x[0], x[1])
    rows = packed.train_and_results()
    for i, (schedule, seed, row) in enumerate(zip(schedules, seeds, rows)):
        trainer = Trainer(TrainConfig(**{**cfg.__dict__, "schedule": schedule, "seed": seed}), corpus=corpus)
        start = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        assert torch.equal(initial[i], start)
        expected = trainer.run()
        assert packed.loss_windows[i] == pytest.approx(trainer.recent_losses, rel=REL)
        assert row.loss_eval == pytest.approx(expected.loss_eval, rel=REL)
        assert (row.seed, row.lr) == (seed, schedule.lr)
    assert rows[1].loss_eval != pytest.approx(rows[2].loss_eval, rel=1e-3)  # one lr, two seeds: two runs


def test_seeds_are_one_per_schedule(corpus):
    with pytest.raises(ConfigError, match=r"seeds=\[0\]: give one seed per schedule \(2\)"):
        PackedTrainer(config(), [ScheduleConfig(), ScheduleConfig(lr=1e-3)], seeds=[0], corpus=corpus)


def test_compiled_packed_variants_train_like_eager_ones(corpus):
    # The compiled block (compile: auto turns it on for CUDA) is the same computation: float64 to rounding.
    schedules = [ScheduleConfig(name="constant", lr=lr) for lr in (1e-3, 1e-2)]
    eager = PackedTrainer(config(compile=False), schedules, corpus=corpus)
    compiled = PackedTrainer(config(compile=True), schedules, corpus=corpus)
    eager.train(), compiled.train()
    assert compiled.compiled and not eager.compiled and json.loads(compiled.execution())["compiled"]
    assert compiled.compile_mode == "default" and "compile_mode" not in json.loads(eager.execution())
    for got, want in zip(compiled.loss_windows, eager.loss_windows):
        assert got == pytest.approx(want, rel=1e-9)
    torch.testing.assert_close(compiled.engine.flat, eager.engine.flat, rtol=1e-9, atol=1e-12)
    graphed = PackedTrainer(config(compile=True, compile_mode="reduce-overhead"), schedules, corpus=corpus)
    graphed.train()  # the whole trunk compiled (CUDA graphs on a GPU; on CPU inductor alone)
    for got, want in zip(graphed.loss_windows, eager.loss_windows):
        assert got == pytest.approx(want, rel=1e-9)


def test_a_compiled_packed_trunk_traces_one_block_for_every_layer(corpus, traced):
    # As a solo trunk does (test_compile_cache.py): the cold compile does not grow with the layer count.
    from powersweep.proxy_models.packed import _trunk

    trainer = PackedTrainer(
        config(model_overrides={"seq_len": 16, "n_layers": 3}, dtype="float32"),
        [ScheduleConfig(name="constant", lr=lr) for lr in (1e-3, 2e-3)],
        corpus=corpus,
    )
    _, *layers, _ = trainer.engine.leaves
    x = torch.randn(2, 2 * 16, trainer.proxy.d_model)
    calls, subgraphs = traced(
        _trunk, x, layers, trainer.engine.spec, *(r[:16] for r in trainer.engine.rope), 2, False
    )
    assert calls.count("invoke_subgraph") == 3 and subgraphs == {"subgraph_0"}


def test_power_variants_pack_too(corpus):
    cfg = config()
    schedules = [
        ScheduleConfig(name="power", power_a=a, power_b=-0.51, lr_max=0.02, warmup_tokens=256)
        for a in (0.01, 0.03)
    ]  # tiny runs: small a keeps lr below lr_max and the chaotic range
    rows = PackedTrainer(cfg, schedules, corpus=corpus).train_and_results()
    for schedule, row in zip(schedules, rows):
        assert row.loss_eval == pytest.approx(solo(cfg, schedule, corpus)[1].loss_eval, rel=REL)


def test_diverged_variant_is_masked_and_does_not_disturb_the_others(corpus):
    cfg = config()
    schedules = [ScheduleConfig(name="constant", lr=lr) for lr in (1e-2, 80.0)]
    rows = PackedTrainer(cfg, schedules, corpus=corpus).train_and_results()
    assert rows[1].status == "diverged" and 0 < rows[1].diverged_at_tokens <= cfg.tokens
    assert math.isnan(rows[1].loss_eval)
    assert rows[0].status == "ok"
    assert rows[0].loss_eval == pytest.approx(solo(cfg, schedules[0], corpus)[1].loss_eval, rel=REL)


def test_moe_packing_is_refused_with_a_clear_error(corpus):
    with pytest.raises(ConfigError, match="pack=1"):
        PackedTrainer(config(model="cpu-moe"), [ScheduleConfig()], corpus=corpus)


# Every option of ProxyLM's block that a packed model takes (packed.py writes the block again over stacked
# weights): grouped-query or full attention, muP or the standard parametrisation, its multipliers, head size
# and RoPE.
BLOCK_OPTIONS = {
    "grouped-query attention": {"n_kv_heads": 1},
    "multi-head attention": {"n_kv_heads": None},
    "standard parametrisation": {"use_mup": False, "n_kv_heads": 2},
    "muP multipliers, head size, RoPE base": {
        "m_residual": 0.5,
        "m_emb": 3.0,
        "d_head": 16,
        "rope_base": 500.0,
    },
}


@pytest.mark.parametrize("head", ["chunked", "full"])
@pytest.mark.parametrize("option", sorted(BLOCK_OPTIONS))
def test_packed_forward_equals_each_variants_own_model(corpus, option, head):
    """Distinct weights per variant: each variant's loss and gradients are those of a ProxyLM holding its
    weights, through bmm, folded SDPA and the head (chunked one variant at a time, or the full head of all
    variants at once), for every block option."""
    overrides = {"seq_len": 32, "n_layers": 2, **BLOCK_OPTIONS[option]}
    cfg = config(model_overrides=overrides, head=head)
    packed = PackedTrainer(
        cfg, [ScheduleConfig(name="constant", lr=lr) for lr in (1e-3, 2e-3, 3e-3)], corpus=corpus
    )
    with torch.no_grad():
        packed.engine.flat.add_(torch.randn_like(packed.engine.flat) * 0.01)
    x, y = packed._batch()
    losses = packed.engine.losses(x, y)
    grads = torch.autograd.grad(losses.sum(), packed.engine.leaves)
    # (K, P): the leaves are packed.engine.flat's columns
    grads = torch.cat([g.flatten(1) for g in grads], dim=1)
    for i in range(3):
        model = ProxyLM(cfg.proxy).double()
        model.head, model.head_chunk_tokens = head, 40  # chunked: several chunks of the 128 tokens
        model.load_state_dict(packed.variant_state(i), strict=False)
        loss = model(x, y)[1]
        assert loss.item() == pytest.approx(losses[i].item(), rel=1e-12)
        loss.backward()
        start = 0
        for name, p in model.named_parameters():
            torch.testing.assert_close(
                grads[i, start : start + p.numel()].view_as(p), p.grad, rtol=1e-10, atol=1e-14, msg=name
            )
            start += p.numel()


def test_micro_batches_and_checkpointing_train_packed_variants_like_the_whole_batch(corpus):
    schedules = [ScheduleConfig(name="wsd", lr=lr, warmup_tokens=256) for lr in (1e-3, 3e-3)]
    whole = PackedTrainer(config(tokens=4 * 32 * 4), schedules, corpus=corpus)
    whole.train()
    split = PackedTrainer(
        config(tokens=4 * 32 * 4, micro_batch_size=2, activation_checkpointing="on"), schedules, corpus=corpus
    )
    split.train()
    assert split.micro_batch_size == 2 and split.checkpointing
    assert split.loss_windows == [pytest.approx(w, rel=1e-12) for w in whole.loss_windows]
    torch.testing.assert_close(split.engine.flat, whole.engine.flat, rtol=1e-10, atol=1e-13)


def test_injected_out_of_memory_halves_the_packed_micro_batch_and_ends_the_same(corpus, monkeypatch):
    schedules = [ScheduleConfig(name="constant", lr=lr) for lr in (1e-3, 3e-3)]
    expected = PackedTrainer(config(tokens=4 * 32 * 5), schedules, corpus=corpus).train_and_results()
    trainer = PackedTrainer(config(tokens=4 * 32 * 5), schedules, corpus=corpus)
    real, calls = trainer.engine.losses, []

    def losses(x, y):  # step 3's whole batch runs out of memory, once
        calls.append((trainer.step, x.shape[0]))
        if calls[-1] == (3, 4) and torch.is_grad_enabled():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(x, y)

    monkeypatch.setattr(trainer.engine, "losses", losses)
    rows = trainer.train_and_results()
    assert trainer.micro_batch_size == 2 and trainer.micro_batch_shrinks == 1 and (3, 2) in calls
    assert json.loads(rows[0].execution) == {
        "pack": 2,
        "micro_batch_size": 2,
        "activation_checkpointing": False,
        "compiled": False,
        "out_of_memory_shrinks": 1,
    }
    assert [r.loss_eval for r in rows] == pytest.approx([r.loss_eval for r in expected], rel=1e-12)


def test_a_checkpoint_restores_the_packed_state_exactly(corpus, tmp_path):
    schedules = [ScheduleConfig(name="wsd", lr=lr, warmup_tokens=256) for lr in (1e-3, 3e-3)]
    uninterrupted = PackedTrainer(config(), schedules, corpus=corpus).train_and_results()
    first = PackedTrainer(config(), schedules, corpus=corpus)
    first.train_to(
        5, total_tokens=config().steps * config().tokens_per_step, checkpoint_path=str(tmp_path / "c.pt")
    )
    resumed = PackedTrainer(config(), schedules, corpus=corpus)
    resumed.load_checkpoint(str(tmp_path / "c.pt"))
    assert [r.loss_eval for r in resumed.train_and_results()] == [r.loss_eval for r in uninterrupted]
