import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from powersweep.proxy_models import lineage
from powersweep.proxy_models.curve_recorder import DECAY, EVAL, TRAIN, TRUNK, CurveGrid
from powersweep.proxy_models.lineage import plan_branches, train_lineage, train_packed_lineage
from powersweep.proxy_models.trainer import TrainConfig, Trainer
from tests.proxy_models.test_lineage import BUDGETS, REAL_BRANCH, VARIANTS, WSD, config


@settings(max_examples=200, deadline=None)
@given(steps=st.integers(1, 10**7), first=st.integers(1, 50), per_decade=st.integers(1, 100))
def test_grid_is_monotone_covers_first_and_last_steps_and_is_log_spaced(steps, first, per_decade):
    grid = CurveGrid(first_steps=first, per_decade=per_decade)
    offsets = grid.offsets(steps)
    assert offsets[0] == 1 and offsets[-1] == steps
    assert all(a < b for a, b in zip(offsets, offsets[1:]))
    assert offsets[:first] == list(range(1, min(first, steps) + 1))
    ratio = 10 ** (1 / per_decade)
    gaps = zip(offsets[first - 1 :], offsets[first:-1])  # no gap wider than a bin, give or take the rounding
    assert all(b <= (a + 0.5) * ratio + 0.5 + 1e-9 for a, b in gaps)
    # at most one point per bin beyond the first steps: the count grows with log(steps), not steps
    assert len(offsets) <= first + per_decade * max(math.log10(steps / first), 0) + 2


def test_the_main_jobs_longest_run_keeps_hundreds_of_points():
    assert 100 <= len(CurveGrid().offsets(15_625)) <= 200  # cpu-quick's 4M-token run: 15,625 steps
    assert len(CurveGrid().offsets(10**6)) < 250  # a million steps: still a few hundred points


@pytest.mark.parametrize("field,value", [("first_steps", 0), ("per_decade", -1), ("per_decade", 2.5)])
def test_bad_grid_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CurveGrid(**{field: value})


def watched_losses(
    cfg: TrainConfig, corpus, *, tokens: float, steps: int, total_tokens: float
) -> list[float]:
    """The per-step losses a trainer of `tokens` watches over its first `steps` steps."""
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "tokens": tokens}), corpus=corpus)
    seen = []
    real = trainer._watch
    trainer._watch = lambda losses, *, tokens: seen.append(losses[0]) or real(losses, tokens=tokens)  # K = 1
    trainer.train_to(steps, total_tokens=total_tokens)
    return seen


def lineage_points(cfg, corpus, **kwargs) -> list[dict]:
    """Every point a lineage hands on, the last copy of each key."""
    seen = []
    train_lineage(cfg, BUDGETS, corpus=corpus, on_curve=seen.append, **kwargs)
    return list(by_key([p for points in seen for p in points]).values())


def by_key(points) -> dict:
    # the trunk's budget is NaN, and NaN keys only match by identity: key the trunk by None
    return {
        (p["segment"], None if math.isnan(p["budget"]) else p["budget"], p["kind"], p["step"]): p
        for p in points
    }


def assert_same_point(point: dict, expected: dict, *, rel: float) -> None:
    numbers = [k for k, v in expected.items() if isinstance(v, float)]
    assert {k: v for k, v in point.items() if k not in numbers} == {
        k: v for k, v in expected.items() if k not in numbers
    }
    assert [point[k] for k in numbers] == pytest.approx([expected[k] for k in numbers], rel=rel, nan_ok=True)


def test_trunk_points_are_the_watched_losses_and_their_means(corpus):
    cfg = config(WSD)
    points = lineage_points(cfg, corpus)
    trunk = [p for p in points if p["segment"] == TRUNK and p["kind"] == TRAIN]
    last_fork = plan_branches(cfg, BUDGETS)[-1].fork_step
    losses = watched_losses(cfg, corpus, tokens=BUDGETS[-1], steps=last_fork, total_tokens=BUDGETS[-1])
    grid = set(CurveGrid().offsets(last_fork)[:-1])
    previous = 0
    for p in sorted(trunk, key=lambda p: p["step"]):
        assert p["loss_train"] == pytest.approx(losses[p["step"] - 1], rel=1e-12)
        assert p["loss_train_mean"] == pytest.approx(
            sum(losses[previous : p["step"]]) / (p["step"] - previous)
        )
        assert p["mean_steps"] == p["step"] - previous
        assert p["tokens"] == p["step"] * cfg.tokens_per_step
        if p["step"] in grid:  # a point added at a fork does not restart the mean
            previous = p["step"]
    assert {p["step"] for p in trunk} == grid | {b.fork_step for b in plan_branches(cfg, BUDGETS)}


def test_each_decay_branch_is_its_solo_runs_curve(corpus):
    cfg = config(WSD)
    points = lineage_points(cfg, corpus)
    for branch in plan_branches(cfg, BUDGETS):
        decay = sorted(
            (p for p in points if p["segment"] == DECAY and p["budget"] == branch.tokens),
            key=lambda p: (p["step"], p["kind"] == EVAL),
        )
        solo_cfg = TrainConfig(**{**cfg.__dict__, "tokens": branch.tokens})
        losses = watched_losses(
            cfg, corpus, tokens=branch.tokens, steps=branch.steps, total_tokens=branch.tokens
        )
        train = [p for p in decay if p["kind"] == TRAIN]
        assert [p["step"] for p in train] == [
            branch.fork_step + o for o in CurveGrid().offsets(branch.steps - branch.fork_step)
        ]
        for p in train:
            assert p["loss_train"] == pytest.approx(losses[p["step"] - 1], rel=1e-9)
            assert p["lr"] == Trainer(solo_cfg, corpus=corpus).lr_at_step(
                p["step"] - 1, total_tokens=branch.tokens
            )
            assert p["fork_tokens"] == branch.fork_step * cfg.tokens_per_step
        evaluated = decay[-1]
        assert evaluated["kind"] == EVAL and evaluated["step"] == branch.steps
        assert evaluated["loss_eval"] == pytest.approx(
            Trainer(solo_cfg, corpus=corpus).run().loss_eval, rel=1e-6
        )


def test_trunk_is_evaluated_at_every_fork(corpus):
    cfg = config(WSD)
    rows, seen = [], []
    train_lineage(cfg, BUDGETS, corpus=corpus, on_result=rows.append, on_curve=seen.append)
    evals = {
        p["step"]: p["loss_eval"]
        for p in by_key(p for ps in seen for p in ps).values()
        if p["segment"] == TRUNK and p["kind"] == EVAL
    }
    trunk_rows = {r.tokens // cfg.tokens_per_step: r.loss_eval for r in rows if r.phase == "trunk"}
    assert evals == pytest.approx(trunk_rows)


def kill_mid_trunk(monkeypatch, at_step: int) -> None:
    real = Trainer.train_step

    def step(self, lr):
        if self.step == at_step:
            raise KeyboardInterrupt("killed")
        return real(self, lr)

    monkeypatch.setattr(Trainer, "train_step", step)


@pytest.mark.parametrize("kill", ["mid_trunk", "second_branch"])
def test_a_killed_and_resumed_lineage_hands_on_every_point_once_with_its_value(
    kill, corpus, tmp_path, monkeypatch
):
    cfg = config(WSD)
    expected = lineage_points(cfg, corpus)
    seen = []
    if kill == "mid_trunk":  # between checkpoints (every 4 steps), with a mean half accumulated
        kill_mid_trunk(monkeypatch, at_step=25)
    else:
        monkeypatch.setattr(
            lineage,
            "_run_branch",
            lambda t, b: (
                (_ for _ in ()).throw(KeyboardInterrupt()) if b.tokens == BUDGETS[1] else REAL_BRANCH(t, b)
            ),
        )
    with pytest.raises(KeyboardInterrupt):
        train_lineage(
            cfg,
            BUDGETS,
            corpus=corpus,
            checkpoint_dir=str(tmp_path),
            checkpoint_every_steps=4,
            on_curve=seen.append,
        )
    monkeypatch.undo()
    train_lineage(
        cfg,
        BUDGETS,
        corpus=corpus,
        checkpoint_dir=str(tmp_path),
        checkpoint_every_steps=4,
        on_curve=seen.append,
    )
    resumed = by_key(p for points in seen for p in points)
    assert sorted(resumed) == sorted(by_key(expected))
    for key, point in by_key(expected).items():
        assert_same_point(resumed[key], point, rel=1e-12)


def test_the_curve_is_in_the_checkpoint_and_loads_with_weights_only(corpus, tmp_path):
    cfg = config(WSD)
    trainer = Trainer(cfg, corpus=corpus)
    trainer.train_to(23, total_tokens=cfg.steps * cfg.tokens_per_step)
    trainer.save_checkpoint(str(tmp_path / "t.pt"))
    state = torch.load(tmp_path / "t.pt", weights_only=True)
    restored = Trainer(cfg, corpus=corpus)
    restored.load_checkpoint(str(tmp_path / "t.pt"))
    # NaN != NaN
    assert str(restored.curve.state_dict()) == str(trainer.curve.state_dict()) == str(state["curve"])


def test_packed_variants_have_their_solo_lineages_curves(corpus):
    schedules = VARIANTS["wsd"]
    seen = [[] for _ in schedules]
    train_packed_lineage(
        config(schedules[0]),
        schedules,
        BUDGETS,
        corpus=corpus,
        on_curve=lambda i, points: seen[i].extend(points),
    )
    for schedule, points in zip(schedules, seen):
        solo = by_key(lineage_points(config(schedule), corpus))
        packed = by_key(points)
        assert sorted(packed) == sorted(solo)
        for key, point in solo.items():
            assert_same_point(packed[key], point, rel=1e-6)


def test_curves_off_keeps_no_points(corpus):
    seen = []
    rows = train_lineage(config(WSD), BUDGETS, corpus=corpus, on_curve=seen.append, curve_grid=None)
    assert seen and not any(seen) and len(rows) == len(BUDGETS)
