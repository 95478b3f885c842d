import math

import pytest

from proxy_models.config import ConfigError
from proxy_models.data import DataConfig
from proxy_models.packed import PackedTrainer
from proxy_models.schedules import ScheduleConfig
from proxy_models.trainer import TrainConfig, Trainer

STEPS = 12
# float64. Gradients agree to 1e-16, but Adam's first steps divide tiny gradients by their own size, which
# lifts rounding to about 1e-9 after a few steps (and to chaos at lrs near divergence, so the lrs here stay
# below that). A wrong lr, clip or mask would show at 1e-3 or more.
REL = 1e-7


def config(**kwargs) -> TrainConfig:
    base = dict(model="cpu-xs", model_overrides={"seq_len": 32, "n_layers": 2}, batch_size=4,
                tokens=4 * 32 * STEPS, dtype="float64", log_every_steps=STEPS, data=DataConfig(eval_tokens=2048),
                schedule=ScheduleConfig(name="wsd", lr=1e-2, warmup_tokens=4 * 32 * 2))
    return TrainConfig(**{**base, **kwargs})


def solo(cfg: TrainConfig, schedule: ScheduleConfig, corpus):
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "schedule": schedule}), corpus=corpus)
    return trainer, trainer.run()


def test_each_packed_variant_equals_its_solo_run(corpus):
    cfg = config(grad_clip=0.05)  # small clip: per-variant clipping is active on most steps
    schedules = [ScheduleConfig(name="wsd", lr=lr, warmup_tokens=4 * 32 * 2) for lr in (1e-3, 3e-3, 1e-2)]
    packed = PackedTrainer(cfg, schedules, corpus=corpus)
    packed.train()
    trajectories = [[float(step[i]) for step in packed.loss_history] for i in range(3)]
    for i, (schedule, row) in enumerate(zip(schedules, packed.results())):
        trainer, expected = solo(cfg, schedule, corpus)
        assert trajectories[i] == pytest.approx(trainer.recent_losses, rel=REL)
        assert row.loss_eval == pytest.approx(expected.loss_eval, rel=REL)
        assert row.lr == schedule.lr and row.status == "ok"


def test_power_variants_pack_too(corpus):
    cfg = config()
    schedules = [ScheduleConfig(name="power", power_a=a, power_b=-0.51, lr_max=0.02, warmup_tokens=256)
                 for a in (0.01, 0.03)]  # tiny runs: small a keeps lr below lr_max and the chaotic range
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
