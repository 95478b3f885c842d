import json
import math
import time
from dataclasses import replace

import pytest
import torch

from powersweep.proxy_models.data import DataConfig
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError
from powersweep.proxy_models.trainer import SoloEngine, TrainConfig, Trainer

TINY = {"seq_len": 64, "n_layers": 2}


def tiny_config(**kwargs) -> TrainConfig:
    defaults = dict(
        model="cpu-xs",
        model_overrides=TINY,
        batch_size=8,
        tokens=8 * 64 * 40,
        schedule=ScheduleConfig(name="wsd", lr=1e-2, warmup_tokens=8 * 64 * 4),
        log_every_steps=10,
        data=DataConfig(eval_tokens=8192),
    )
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def test_loss_falls_and_row_is_complete(corpus):
    trainer = Trainer(tiny_config(), corpus=corpus)
    row = trainer.run().to_row()
    assert row["status"] == "ok" and row["tokens"] == 8 * 64 * 40
    assert row["loss_train"] < trainer.first_loss - 0.5  # from ~ln(256) = 5.5 nats
    assert row["loss_eval"] < math.log(256) - 0.5
    assert row["ppl_eval"] == pytest.approx(math.exp(row["loss_eval"]))
    assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1


def test_the_row_names_its_width_and_parametrisation(corpus):
    config = tiny_config(tokens=8 * 64 * 8, model_overrides={**TINY, "use_mup": False})
    standard = Trainer(config, corpus=corpus).run().to_row()
    assert (standard["parametrisation"], standard["d_model"], standard["m_width"]) == ("sp", 64, 1.0)
    mup = Trainer(replace(config, model_overrides=TINY), corpus=corpus).run().to_row()
    assert (mup["parametrisation"], mup["d_model"], mup["m_width"]) == ("mup", 64, 0.5)  # d_base 128
    assert mup["loss_eval"] != standard["loss_eval"]  # the two trained different models


def test_checkpoint_resume_equals_uninterrupted_run(corpus, tmp_path):
    config = tiny_config(dtype="float64")
    uninterrupted = Trainer(config, corpus=corpus).run()
    path = str(tmp_path / "run.pt")
    first = Trainer(config, corpus=corpus)
    first.train_to(17, total_tokens=config.steps * config.tokens_per_step, checkpoint_path=path)
    resumed = Trainer(config, corpus=corpus).run(checkpoint_path=path, checkpoint_every_steps=10)
    assert resumed.loss_eval == uninterrupted.loss_eval
    assert resumed.loss_train == uninterrupted.loss_train


def test_huge_lr_is_reported_as_diverged_not_raised(corpus):
    trainer = Trainer(tiny_config(schedule=ScheduleConfig(name="constant", lr=50.0)), corpus=corpus)
    row = trainer.run()
    assert row.status == "diverged"
    assert 0 < row.diverged_at_tokens < trainer.cfg.tokens
    assert math.isnan(row.loss_eval) and trainer.step < trainer.cfg.steps  # stopped early


def test_micro_batches_give_the_same_step(corpus):
    config = tiny_config(dtype="float64", tokens=8 * 64 * 5)
    whole = Trainer(config, corpus=corpus).run()
    split = Trainer(TrainConfig(**{**config.__dict__, "micro_batch_size": 2}), corpus=corpus).run()
    assert split.loss_eval == pytest.approx(whole.loss_eval, rel=1e-10)


def test_moe_model_trains(corpus):
    row = Trainer(tiny_config(model="cpu-moe", tokens=8 * 64 * 10), corpus=corpus).run()
    assert row.status == "ok" and row.loss_eval < math.log(256)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"tokens": 100}, "tokens=100"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"micro_batch_size": 3}, "micro_batch_size=3"),
        ({"dtype": "half"}, "dtype='half'"),
    ],
)
def test_bad_config_names_field(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tiny_config(**kwargs)


@pytest.mark.slow
def test_compiled_forward_trains_like_eager(corpus):
    config = tiny_config(
        dtype="float64", tokens=8 * 64 * 6, schedule=ScheduleConfig(name="constant", lr=1e-2)
    )
    eager = Trainer(config, corpus=corpus)
    compiled = Trainer(TrainConfig(**{**config.__dict__, "compile": True}), corpus=corpus)
    eager.train(), compiled.train()  # training only: an evaluation would compile a graph of its own
    assert compiled.compiled and len(eager.recent_losses) == 6
    assert compiled.recent_losses == pytest.approx(eager.recent_losses, rel=1e-9)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
        # the compiled forward trained the same weights
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)


SMALL = {"seq_len": 16, "n_layers": 1}


def small_config(**kwargs) -> TrainConfig:
    defaults = dict(
        model="cpu-xs",
        model_overrides=SMALL,
        batch_size=8,
        tokens=8 * 16 * 6,
        dtype="float64",
        schedule=ScheduleConfig(name="constant", lr=1e-2),
        data=DataConfig(eval_tokens=1024),
    )
    return TrainConfig(**{**defaults, **kwargs})


def out_of_memory_in_step_2(trainer: Trainer, monkeypatch) -> list[tuple[int, int]]:
    """The second micro-batch of 4 of step 2 runs out of memory (after one backward); returns the (step,
    micro-batch) of every forward."""
    real_forward, calls = trainer.model.forward, []

    def forward(x, y=None):
        calls.append((trainer.step, x.shape[0]))
        if calls[-1] == (2, 4) and calls.count((2, 4)) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(x, y)

    monkeypatch.setattr(trainer.model, "forward", forward)
    return calls


def test_injected_out_of_memory_halves_the_micro_batch_and_the_run_ends_the_same(corpus, monkeypatch):
    uninterrupted = Trainer(small_config(micro_batch_size=4), corpus=corpus)
    expected = uninterrupted.run()
    trainer = Trainer(small_config(micro_batch_size=4), corpus=corpus)
    calls = out_of_memory_in_step_2(trainer, monkeypatch)
    row = trainer.run()
    assert trainer.micro_batch_size == 2 and trainer.micro_batch_shrinks == 1
    assert (2, 2) in calls and trainer.step == uninterrupted.step
    assert row.status == expected.status == "ok"
    assert row.loss_eval == pytest.approx(expected.loss_eval, rel=1e-12)
    assert trainer.recent_losses == pytest.approx(uninterrupted.recent_losses, rel=1e-12)


def test_out_of_memory_under_cuda_graphs_compiles_again_without_them(corpus, monkeypatch):
    # A graph holds its memory pool while it lives: the halved micro-batch trains as blocks compiled in mode
    # 'default'. On CPU reduce-overhead compiles the trunk with inductor alone; the run is the same either
    # way.
    eager = Trainer(small_config(micro_batch_size=4), corpus=corpus)
    expected = eager.run()
    trainer = Trainer(
        small_config(micro_batch_size=4, compile=True, compile_mode="reduce-overhead"), corpus=corpus
    )
    assert "trunk" in trainer.model.__dict__ and trainer.compile_mode == "reduce-overhead"
    reset = []
    monkeypatch.setattr("torch._inductor.cudagraph_trees.reset_cudagraph_trees", lambda: reset.append(True))
    out_of_memory_in_step_2(trainer, monkeypatch)
    row = trainer.run()
    assert trainer.micro_batch_size == 2 and reset == [True] and trainer.compiled
    assert trainer.compile_mode == "default" and "compiled_block" in trainer.model.__dict__
    assert "trunk" not in trainer.model.__dict__ and json.loads(row.execution)["compile_mode"] == "default"
    assert row.loss_eval == pytest.approx(expected.loss_eval, rel=1e-9)
    assert trainer.recent_losses == pytest.approx(eager.recent_losses, rel=1e-9)


def test_the_first_step_of_a_trainer_is_timed_once(corpus, monkeypatch):
    trainer, clock = (
        Trainer(small_config(), corpus=corpus),
        iter(i * i for i in range(1000)),
    )  # each read longer
    monkeypatch.setattr("powersweep.proxy_models.loop.time.perf_counter", lambda: float(next(clock)))
    trainer.train_to(2, total_tokens=None)
    first = trainer.first_step_seconds
    trainer.train_to(4, total_tokens=None)
    assert first >= 1.0 and trainer.first_step_seconds == first  # step 0's, not updated by later steps
    assert trainer.seconds_trained > first


def test_a_trainer_times_its_setup_and_the_wall_clock_span_of_its_first_step(corpus):
    before = time.time()
    trainer = Trainer(small_config(), corpus=corpus)
    built = time.time()
    assert set(trainer.setup_seconds) == {"device", "corpus", "model"}
    assert all(0 <= s for s in trainer.setup_seconds.values())
    assert sum(trainer.setup_seconds.values()) <= built - before + 0.01
    assert trainer.first_step_at is None  # no step yet
    trainer.train_to(3, total_tokens=None)
    start, end = trainer.first_step_at
    assert built <= start <= end <= time.time()
    assert end - start == pytest.approx(trainer.first_step_seconds, abs=1e-6)
    trainer.train_to(5, total_tokens=None)
    assert trainer.first_step_at == (start, end)  # step 0's, kept


def test_out_of_memory_at_one_sequence_turns_on_checkpointing_then_gives_up(corpus, monkeypatch):
    trainer = Trainer(small_config(batch_size=1, tokens=16 * 3), corpus=corpus)

    def forward(x, y=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(trainer.model, "forward", forward)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        trainer.run()
    assert trainer.model.activation_checkpointing and trainer.micro_batch_shrinks == 1


def test_auto_micro_batch_is_the_largest_that_fits_the_budget(corpus):
    from powersweep.proxy_models.memory import GIB, step_memory

    proxy = small_config().proxy
    fits_two = step_memory(proxy, micro_batch_size=2, compute_bytes=8, param_bytes=8, head="full").peak + 1
    trainer = Trainer(small_config(micro_batch_size="auto", memory_budget_gib=fits_two / GIB), corpus=corpus)
    assert trainer.micro_batch_size == 2 and not trainer.model.activation_checkpointing
    whole = Trainer(small_config(micro_batch_size="auto", memory_budget_gib=1.0), corpus=corpus)
    assert whole.micro_batch_size == 8
    assert Trainer(small_config(), corpus=corpus).micro_batch_size == 8  # CPU default: the whole batch
    with pytest.raises(ConfigError, match="memory_budget_gib"):
        Trainer(small_config(micro_batch_size="auto"), corpus=corpus)


def test_compile_mode_reaches_the_compiled_block_or_the_whole_trunk_for_cuda_graphs(corpus, monkeypatch):
    compiled = []
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kwargs: compiled.append((fn.__name__, kwargs.get("mode"))) or fn
    )
    three = {**SMALL, "n_layers": 3}
    Trainer(
        small_config(compile=True, compile_mode="max-autotune-no-cudagraphs", model_overrides=three),
        corpus=corpus,
    )
    assert compiled == [("run_block", "max-autotune-no-cudagraphs")]  # one compiled block for every layer
    # CUDA graphs cannot chain the replays of one compiled block (compile_cache.py): the trunk compiles whole.
    Trainer(small_config(compile=True, compile_mode="reduce-overhead", model_overrides=three), corpus=corpus)
    assert compiled[1:] == [("trunk", "reduce-overhead")]
    Trainer(small_config(compile=False, compile_mode="reduce-overhead"), corpus=corpus)
    assert len(compiled) == 2  # a mode alone compiles nothing
    Trainer(small_config(compile=True, compile_scope="trunk", model_overrides=three), corpus=corpus)
    assert compiled[2:] == [("trunk", "default")]  # the trunk asked for in any mode
    # compile_mode auto, on CPU
    auto = Trainer(small_config(compile=True, model_overrides=three), corpus=corpus)
    assert compiled[3:] == [("run_block", "default")] and auto.compile_mode == "default"
    assert json.loads(auto.execution())["compile_mode"] == "default"


def test_trunk_compiled_for_cuda_graphs_trains_like_eager(corpus):
    # On CPU inductor compiles the trunk and leaves CUDA graphs out: the same computation, float64 to
    # rounding.
    config = small_config(model_overrides={**SMALL, "n_layers": 2})
    eager = Trainer(config, corpus=corpus)
    graphed = Trainer(
        TrainConfig(**{**config.__dict__, "compile": True, "compile_mode": "reduce-overhead"}), corpus=corpus
    )
    eager.train(), graphed.train()  # training only: an evaluation would compile a graph of its own
    assert graphed.compiled and len(eager.recent_losses) == 6
    assert graphed.recent_losses == pytest.approx(eager.recent_losses, rel=1e-9)
    for p, q in zip(eager.model.parameters(), graphed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)


def test_gradients_kept_for_cuda_graphs_train_like_gradients_set_to_none(corpus, monkeypatch):
    # Under CUDA graphs a solo run keeps its gradients allocated and zeroes them in place (a replay's output
    # cannot become .grad); elsewhere they are dropped each step. Both are the same run, micro-batches
    # included.
    config = small_config(micro_batch_size=2)
    dropped = Trainer(config, corpus=corpus)
    dropped.run()
    monkeypatch.setattr(SoloEngine, "graphed", property(lambda self: True))
    kept = Trainer(config, corpus=corpus)
    assert all(p.grad is not None and not p.grad.any() for p in kept.params)
    kept.run()
    assert all(p.grad is not None and not p.grad.any() for p in kept.params)  # zeroed after the last step
    assert kept.recent_losses == dropped.recent_losses
    for p, q in zip(dropped.params, kept.params):
        torch.testing.assert_close(q, p, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pack", [1, 2])
def test_cuda_graphs_accumulate_micro_batches_like_eager_on_gpu(corpus, pack):
    # A replay writes its outputs, the gradients among them, into the same memory as the replay before it: the
    # micro-batches' gradients must still add up, solo (into .grad) and packed (into the flat buffer).
    from powersweep.proxy_models.packed import PackedTrainer

    runs = {}
    for compiling in ({"compile": False}, {"compile": True, "compile_mode": "reduce-overhead"}):
        config = small_config(
            device="cuda",
            micro_batch_size=2,
            model_overrides={**SMALL, "n_layers": 2},
            head="chunked",
            **compiling,
        )  # float64 throughout: liger's kernel works in fp32
        if pack == 1:
            trainer = Trainer(config, corpus=corpus)
            trainer.run()
            runs[trainer.compiled] = (trainer.recent_losses, list(trainer.model.parameters()))
        else:
            trainer = PackedTrainer(
                config, [config.schedule, replace(config.schedule, lr=3e-3)], corpus=corpus
            )
            trainer.train()
            runs[trainer.compiled] = (trainer.loss_windows[1], [trainer.engine.flat])
    (eager_losses, eager_params), (graphed_losses, graphed_params) = runs[False], runs[True]
    assert graphed_losses == pytest.approx(eager_losses, rel=1e-9)
    for p, q in zip(eager_params, graphed_params):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)


def test_cuda_budget_counts_the_memory_this_process_already_caches(corpus, monkeypatch):
    # A trainer built after another in the same process (a benchmark's rows, a lineage's retry) finds the
    # first one's memory cached by torch's allocator: neither free on the device nor allocated, yet its to
    # reuse.
    from powersweep.proxy_models.memory import GIB, USABLE_FRACTION

    trainer = Trainer(small_config(), corpus=corpus)
    trainer.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 30 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * GIB)
    assert trainer.memory_budget_bytes() == int(40 * GIB * USABLE_FRACTION)


def test_activation_checkpointing_and_micro_batches_train_like_the_full_batch(corpus):
    whole = Trainer(small_config(), corpus=corpus)
    whole.run()
    split = Trainer(small_config(micro_batch_size=2, activation_checkpointing="on"), corpus=corpus)
    split.run()
    assert split.model.activation_checkpointing
    assert split.recent_losses == pytest.approx(whole.recent_losses, rel=1e-12)
    for p, q in zip(whole.model.parameters(), split.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("check_every, stops_at", [(1, 8), (5, 10)])
def test_divergence_read_every_few_steps_reports_the_first_bad_step(
    corpus, monkeypatch, check_every, stops_at
):
    def fake_step(self, lr):  # losses stay on the device until read; step 8 is the first non-finite one
        self.step += 1
        return torch.tensor(math.nan if self.step >= 8 else 3.0, dtype=torch.float64)

    monkeypatch.setattr(Trainer, "train_step", fake_step)
    trainer = Trainer(small_config(tokens=8 * 16 * 30), corpus=corpus)
    trainer.check_every = check_every
    trainer.train_to(30, total_tokens=None)
    assert trainer.diverged_at == 8 * 8 * 16  # tokens seen after step 8, however late it was read
    assert trainer.step == stops_at and trainer.recent_losses[:7] == [3.0] * 7
    assert len(trainer.recent_losses) == 8 and math.isnan(trainer.recent_losses[-1])  # nothing after step 8
    assert not trainer.pending_losses


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"micro_batch_size": "big"}, "micro_batch_size='big'"),
        ({"head": "fast"}, "head='fast'"),
        ({"compile_mode": "cudagraphs"}, "compile_mode='cudagraphs'"),
        ({"compile_scope": "model"}, "compile_scope='model'"),
        (
            {"compile_scope": "blocks", "compile_mode": "reduce-overhead"},
            "compile_scope='blocks' with compile_mode='reduce-overhead'",
        ),
        ({"activation_checkpointing": "yes"}, "activation_checkpointing"),
        ({"memory_budget_gib": 0}, "memory_budget_gib=0"),
    ],
)
def test_bad_execution_settings_name_the_field(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        small_config(**kwargs)
