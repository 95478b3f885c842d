import math

import pytest
import torch

from proxy_models.config import ConfigError
from proxy_models.data import DataConfig
from proxy_models.schedules import ScheduleConfig
from proxy_models.trainer import TrainConfig, Trainer

TINY = {"seq_len": 64, "n_layers": 2}


def tiny_config(**kwargs) -> TrainConfig:
    defaults = dict(model="cpu-xs", model_overrides=TINY, batch_size=8, tokens=8 * 64 * 40,
                    schedule=ScheduleConfig(name="wsd", lr=1e-2, warmup_tokens=8 * 64 * 4), log_every_steps=10,
                    data=DataConfig(eval_tokens=8192))
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
    config = tiny_config(dtype="float64", tokens=8 * 64 * 6, schedule=ScheduleConfig(name="constant", lr=1e-2))
    eager = Trainer(config, corpus=corpus)
    compiled = Trainer(TrainConfig(**{**config.__dict__, "compile": True}), corpus=corpus)
    eager.run(), compiled.run()
    assert compiled.recent_losses == pytest.approx(eager.recent_losses, rel=1e-9)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)  # the compiled forward trained the same weights
