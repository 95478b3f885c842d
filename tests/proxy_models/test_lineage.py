import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from powersweep.proxy_models import lineage
from powersweep.proxy_models.budgets import plan_branches, token_ratio, trunk_tokens
from powersweep.proxy_models.data import DataConfig
from powersweep.proxy_models.lineage import train_lineage, train_packed_lineage
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer

STEP_TOKENS = 4 * 32  # batch 4 x seq_len 32


def config(schedule: ScheduleConfig, **kwargs) -> TrainConfig:
    return TrainConfig(
        model="cpu-xs",
        model_overrides={"seq_len": 32, "n_layers": 1},
        batch_size=4,
        tokens=STEP_TOKENS * 40,
        schedule=schedule,
        dtype="float64",
        data=DataConfig(eval_tokens=4096),
        **kwargs,
    )


WSD = ScheduleConfig(name="wsd", lr=2e-2, warmup_tokens=STEP_TOKENS * 3, decay_fraction=0.25)
POWER = ScheduleConfig(
    name="power",
    power_a=4.0,
    power_b=-0.51,
    lr_max=0.02,
    warmup_tokens=STEP_TOKENS * 3,
    decay_fraction=0.25,
    decay_shape="exp",
)
BUDGETS = [STEP_TOKENS * 12, STEP_TOKENS * 20, STEP_TOKENS * 40]


def scanned_fork(cfg: TrainConfig, trunk: TrainConfig) -> int:
    """The oracle: first step whose lr differs between the solo schedule and that of a longer run."""
    solo_total, trunk_total = cfg.steps * cfg.tokens_per_step, 2 * trunk.steps * trunk.tokens_per_step
    for k in range(cfg.steps):
        n = (k + 1) * cfg.tokens_per_step
        if cfg.schedule.lr_at(n, total_tokens=solo_total, batch_size=4) != cfg.schedule.lr_at(
            n, total_tokens=trunk_total, batch_size=4
        ):
            return k
    return cfg.steps


@pytest.mark.parametrize("schedule", [WSD, POWER, ScheduleConfig(name="cosine", lr=1e-2)], ids=str)
def test_fork_step_matches_a_scan_of_the_two_lr_sequences(schedule):
    base = config(schedule)
    trunk = TrainConfig(**{**base.__dict__, "tokens": BUDGETS[-1]})
    for branch in plan_branches(base, BUDGETS):
        solo = TrainConfig(**{**base.__dict__, "tokens": branch.tokens})
        assert branch.fork_step == scanned_fork(solo, trunk)
    if schedule.name == "cosine":  # depends on T everywhere: every budget runs solo
        assert all(b.fork_step == 0 for b in plan_branches(base, BUDGETS))


@pytest.mark.parametrize("schedule", [WSD, POWER], ids=["wsd", "power"])
def test_each_branch_equals_its_solo_run(schedule, corpus):
    rows = train_lineage(config(schedule), BUDGETS, corpus=corpus)
    for row, tokens in zip(rows, BUDGETS):
        solo = Trainer(TrainConfig(**{**config(schedule).__dict__, "tokens": tokens}), corpus=corpus).run()
        assert row.tokens == tokens and row.status == "ok"
        assert row.loss_eval == pytest.approx(solo.loss_eval, rel=1e-6)
        assert row.loss_train == pytest.approx(solo.loss_train, rel=1e-6)


def test_paper_table2_token_ratio():
    """Table 2: T = 2B..256B, 10% decay: (0.9 * 256 + 0.1 * 510) / 510 = 0.552."""
    paper = TrainConfig(
        model="paper-12m",
        batch_size=128,
        tokens=256e9,
        schedule=ScheduleConfig(name="wsd", lr=1e-3, warmup_tokens=1e9, decay_fraction=0.1),
    )
    budgets = [2e9 * 2**i for i in range(8)]
    assert token_ratio(paper, budgets) == pytest.approx(0.552, abs=5e-4)


REAL_BRANCH = lineage._run_branch


def kill_at_second_branch(monkeypatch) -> list:
    """Make the lineage's second branch raise as a kill would;
    returns the budgets whose branch was started."""
    calls = []

    def crash_on_second(trainer, branch):
        calls.append(branch.tokens)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return REAL_BRANCH(trainer, branch)

    monkeypatch.setattr(lineage, "_run_branch", crash_on_second)
    return calls


def test_killed_lineage_resumes_without_redoing_finished_branches(corpus, tmp_path, monkeypatch):
    cfg = config(WSD)
    expected = train_lineage(cfg, BUDGETS, corpus=corpus)
    calls = kill_at_second_branch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path), checkpoint_every_steps=7)
    calls.clear()
    monkeypatch.setattr(lineage, "_run_branch", lambda t, b: calls.append(b.tokens) or REAL_BRANCH(t, b))
    resumed = train_lineage(
        cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path), checkpoint_every_steps=7
    )
    assert calls == BUDGETS[1:]  # the first budget was finished before the kill
    assert [r.loss_eval for r in resumed] == pytest.approx([r.loss_eval for r in expected], rel=1e-12)


def test_a_lineage_killed_while_storing_a_row_stores_it_again_on_resume(corpus, tmp_path):
    """A trial killed inside on_result (mid store write) must not resume past the row it never stored."""
    cfg, stored = config(WSD), []

    def store(result):
        if result.phase == "final":
            stored.append(result.tokens)

    def store_then_die(result):
        if result.phase == "final" and result.tokens == BUDGETS[1]:
            raise KeyboardInterrupt("killed while writing the row")
        store(result)

    with pytest.raises(KeyboardInterrupt):
        train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path), on_result=store_then_die)
    train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path), on_result=store)
    assert stored == BUDGETS  # each budget reached the store once, the interrupted one on resume


# A lineage process whose second trunk checkpoint never finishes: its write leaves part of a file, says so in
# the file argv[3], then waits on its stdin (the test kills it there).
STUCK_WRITER = """
import importlib.util, os, sys, torch
spec = importlib.util.spec_from_file_location("lineage_tests", sys.argv[1])
tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tests)
directory, writing = sys.argv[2], sys.argv[3]
real_save = torch.save

def save(obj, f):  # f: the open temp file (proxy_models/checkpoint.py)
    if os.path.basename(f.name).startswith("trunk.pt.tmp-") and \
os.path.exists(os.path.join(directory, "trunk.pt")):
        f.write(b"part of a trunk")
        f.flush()
        open(writing, "w").close()
        sys.stdin.read()
    real_save(obj, f)

torch.save = save
from powersweep.proxy_models.data import load_corpus
cfg = tests.config(tests.WSD)
tests.train_lineage(cfg, tests.BUDGETS, corpus=load_corpus(cfg.data), checkpoint_dir=directory)
"""


def test_a_lineage_killed_while_writing_its_checkpoint_resumes_and_removes_the_temp_file(corpus, tmp_path):
    directory, writing, stderr = tmp_path / "lineage", tmp_path / "writing", tmp_path / "stderr"
    # a file, not a pipe: a full pipe would stop the child before its checkpoint
    with open(stderr, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", STUCK_WRITER, __file__, str(directory), str(writing)],
            stdin=subprocess.PIPE,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 300
        while not writing.exists():
            assert child.poll() is None, stderr.read_text()[-2000:]
            assert time.monotonic() < deadline, "the child never reached its second checkpoint"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    left = [name for name in os.listdir(directory) if ".tmp-" in name]
    ours = f".tmp-{socket.gethostname()}-{child.pid}"
    assert f"trunk.pt{ours}" in left  # beside the first checkpoint
    # training goes on while the checkpoint is written (proxy_models/checkpoint.py): the kill may also land in
    # an atomic write of the lineage's own files (results.json), whose temp file resume must remove as well
    assert all(name.endswith(ours) for name in left), left
    resumed = train_lineage(config(WSD), BUDGETS, corpus=corpus, checkpoint_dir=str(directory))
    expected = train_lineage(config(WSD), BUDGETS, corpus=corpus)
    assert [r.loss_eval for r in resumed] == pytest.approx([r.loss_eval for r in expected], rel=1e-12)
    assert not [name for name in os.listdir(directory) if ".tmp-" in name]


def test_adding_a_smaller_budget_after_the_trunk_passed_its_fork(corpus, tmp_path):
    """A resumed lineage whose trunk checkpoint is past a new budget's fork restarts the trunk: exact."""
    cfg = config(WSD)
    train_lineage(cfg, BUDGETS[1:], corpus=corpus, checkpoint_dir=str(tmp_path))
    extended = train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path))
    solo = Trainer(TrainConfig(**{**cfg.__dict__, "tokens": BUDGETS[0]}), corpus=corpus).run()
    assert extended[0].loss_eval == pytest.approx(solo.loss_eval, rel=1e-12)


def test_adding_a_larger_budget_continues_the_trunk(corpus, tmp_path):
    cfg = config(WSD)
    train_lineage(cfg, BUDGETS[:2], corpus=corpus, checkpoint_dir=str(tmp_path))
    extended = train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path))
    solo = Trainer(TrainConfig(**{**cfg.__dict__, "tokens": BUDGETS[2]}), corpus=corpus).run()
    assert extended[2].loss_eval == pytest.approx(solo.loss_eval, rel=1e-12)


def test_trunk_divergence_marks_later_budgets_and_keeps_earlier(corpus, monkeypatch):
    cfg = config(WSD)
    branches = plan_branches(cfg, BUDGETS)
    blow_up_at = branches[1].fork_step - 2  # past the end of the first branch, before the second fork
    assert blow_up_at > branches[0].steps
    real_step = Trainer.train_step

    def faulty(self, lr):
        loss = real_step(self, lr)
        return torch.full_like(loss, math.nan) if self.step > blow_up_at else loss

    monkeypatch.setattr(Trainer, "train_step", faulty)
    rows = train_lineage(cfg, BUDGETS, corpus=corpus)
    assert rows[0].status == "ok"
    assert [r.status for r in rows[1:]] == ["diverged", "diverged"]
    assert rows[1].diverged_at_tokens == rows[2].diverged_at_tokens == (blow_up_at + 1) * STEP_TOKENS


def rows_by_key(rows) -> dict:
    return {(r.phase, r.tokens): r for r in rows}


def test_trunk_rows_are_the_trunk_evaluated_at_every_fork(corpus):
    cfg = config(WSD)
    seen = []
    finals = train_lineage(cfg, BUDGETS, corpus=corpus, on_result=seen.append)
    forks = [b.fork_step for b in plan_branches(cfg, BUDGETS)]
    trunk = [r for r in seen if r.phase == "trunk"]
    assert [r.tokens for r in trunk] == [f * STEP_TOKENS for f in forks] == trunk_tokens(cfg, BUDGETS)
    assert [r for r in seen if r.phase == "final"] == finals
    longest = Trainer(TrainConfig(**{**cfg.__dict__, "tokens": BUDGETS[-1]}), corpus=corpus)
    for fork, row in zip(forks, trunk):  # the longest run, stopped before its decay, evaluated there
        longest.train_to(fork, total_tokens=BUDGETS[-1])
        assert row.loss_eval == pytest.approx(longest.evaluate(), rel=1e-12) and row.status == "ok"


def test_killed_lineage_emits_every_row_once(corpus, tmp_path, monkeypatch):
    cfg = config(WSD)
    expected = []
    train_lineage(cfg, BUDGETS, corpus=corpus, on_result=expected.append)
    seen = []

    def crash_on_second(trainer, branch):
        if branch.tokens == BUDGETS[1]:
            raise KeyboardInterrupt("killed")
        return REAL_BRANCH(trainer, branch)

    monkeypatch.setattr(lineage, "_run_branch", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path), on_result=seen.append)
    monkeypatch.setattr(lineage, "_run_branch", REAL_BRANCH)
    train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=str(tmp_path), on_result=seen.append)
    assert sorted(rows_by_key(seen)) == sorted(rows_by_key(expected)) and len(seen) == len(expected)
    for key, row in rows_by_key(expected).items():
        assert rows_by_key(seen)[key].loss_eval == pytest.approx(row.loss_eval, rel=1e-12)


VARIANTS = {
    "wsd": [
        ScheduleConfig(name="wsd", lr=lr, warmup_tokens=STEP_TOKENS * 3, decay_fraction=0.25)
        for lr in (2e-3, 5e-3)
    ],  # lrs well below the chaotic range (see test_packed.py)
    "power": [
        ScheduleConfig(
            name="power",
            power_a=4.0,
            power_b=-0.51,
            lr_max=m,
            warmup_tokens=STEP_TOKENS * 3,
            decay_fraction=0.25,
            decay_shape="exp",
        )
        for m in (0.002, 0.005)
    ],
}


def packed_rows(schedules, corpus, **kwargs) -> list[list]:
    """Every row of each variant of a packed lineage, in the order it was handed on."""
    seen = [[] for _ in schedules]
    train_packed_lineage(
        config(schedules[0]),
        schedules,
        BUDGETS,
        corpus=corpus,
        on_result=lambda i, row: seen[i].append(row),
        **kwargs,
    )
    return seen


@pytest.mark.parametrize("name, seeds", [("wsd", None), ("power", None), ("wsd", (3, 4))])
def test_packed_lineage_equals_each_variants_solo_lineage(name, seeds, corpus):
    schedules = VARIANTS[name]
    seeds = seeds or (0,) * len(schedules)
    for schedule, seed, rows in zip(schedules, seeds, packed_rows(schedules, corpus, seeds=seeds)):
        solo = []
        train_lineage(config(schedule, seed=seed), BUDGETS, corpus=corpus, on_result=solo.append)
        assert {r.seed for r in rows} == {seed}
        assert [(r.phase, r.tokens, r.status) for r in rows] == [(r.phase, r.tokens, r.status) for r in solo]
        for row, expected in zip(rows, solo):  # budget rows and trunk rows alike
            assert row.loss_eval == pytest.approx(expected.loss_eval, rel=1e-6)
            assert row.loss_train == pytest.approx(expected.loss_train, rel=1e-6)
            assert row.lr_max == expected.lr_max or row.lr == expected.lr


def test_killed_packed_lineage_resumes_from_its_checkpoint(corpus, tmp_path, monkeypatch):
    schedules = VARIANTS["wsd"]
    expected = packed_rows(schedules, corpus)
    calls = kill_at_second_branch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        packed_rows(schedules, corpus, checkpoint_dir=str(tmp_path), checkpoint_every_steps=7)
    calls.clear()
    monkeypatch.setattr(lineage, "_run_branch", lambda t, b: calls.append(b.tokens) or REAL_BRANCH(t, b))
    resumed = packed_rows(schedules, corpus, checkpoint_dir=str(tmp_path), checkpoint_every_steps=7)
    assert calls == BUDGETS[1:]  # the first budget was finished before the kill
    for rows, full in zip(resumed, expected):  # only the rows not handed on before the kill come again
        assert [(r.phase, r.tokens) for r in rows] == [(r.phase, r.tokens) for r in full[-len(rows) :]]
        assert [r.loss_eval for r in rows] == pytest.approx(
            [r.loss_eval for r in full[-len(rows) :]], rel=1e-12
        )


def test_a_variant_diverged_in_the_trunk_does_not_disturb_the_others(corpus):
    schedules = [VARIANTS["wsd"][1], replace(VARIANTS["wsd"][1], lr=80.0)]
    packed = packed_rows(schedules, corpus)
    for schedule, rows in zip(schedules, packed):
        solo = []
        train_lineage(config(schedule), BUDGETS, corpus=corpus, on_result=solo.append)
        assert [r.status for r in rows] == [r.status for r in solo]
        assert [r.diverged_at_tokens for r in rows] == pytest.approx(
            [r.diverged_at_tokens for r in solo], nan_ok=True
        )
        assert [r.loss_eval for r in rows] == pytest.approx(
            [r.loss_eval for r in solo], rel=1e-6, nan_ok=True
        )
    assert {r.status for r in packed[0]} == {"ok"} and {r.status for r in packed[1]} == {"diverged"}


def test_the_time_spent_recording_rows_and_on_first_steps_is_counted(corpus):
    def slow_record(row, seconds=0.05):  # a store write that takes at least `seconds`
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            pass

    attempt, seen = lineage.Attempt(), []
    train_lineage(
        config(WSD),
        BUDGETS,
        corpus=corpus,
        on_result=lambda row: (seen.append(row), slow_record(row)),
        attempt=attempt,
    )
    assert len(seen) == 2 * len(BUDGETS)  # a trunk row and a budget row per fork
    assert attempt.record_s >= len(seen) * 0.05 and attempt.train_s > 0
    assert 0 < attempt.first_step_s < attempt.train_s  # one trainer: one first step, counted within training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pack", [1, 2])
def test_cuda_graphs_train_a_whole_lineage_like_eager_on_gpu(corpus, tmp_path, pack):
    # The default on CUDA (compile_mode 'auto': a solo run's trunk replayed as CUDA graphs) through everything
    # a sweep's lineage does between steps: held-out evaluation (no grad, another batch), trunk rows, forks
    # whose branch state is copied and put back, checkpoints copied to pinned host memory. Packed variants as
    # well. lrs well below WSD's 2e-2, where this model's training is chaotic: float rounding grows by orders
    # of magnitude a step there, so compiled and eager runs drift apart as two eager runs of other kernels
    # would.
    schedules = [replace(WSD, lr=2e-3), replace(WSD, lr=5e-3)]

    def rows(compiling: dict, checkpoint_dir: str) -> list:
        # float64: liger's kernel is fp32
        cfg = config(schedules[0], device="cuda", head="chunked", **compiling)
        seen = []
        if pack == 1:
            train_lineage(cfg, BUDGETS, corpus=corpus, checkpoint_dir=checkpoint_dir, on_result=seen.append)
        else:
            train_packed_lineage(
                cfg,
                schedules,
                BUDGETS,
                seeds=[0, 1],
                corpus=corpus,
                checkpoint_dir=checkpoint_dir,
                on_result=lambda i, row: seen.append(row),
            )
        return seen

    eager = rows({"compile": False}, str(tmp_path / "eager"))
    graphed = rows({"compile": True, "compile_mode": "reduce-overhead"}, str(tmp_path / "graphed"))
    assert [json.loads(r.execution)["compile_mode"] for r in graphed] == ["reduce-overhead"] * len(eager)
    assert [(r.phase, r.tokens) for r in graphed] == [(r.phase, r.tokens) for r in eager]
    assert [r.loss_eval for r in graphed] == pytest.approx([r.loss_eval for r in eager], rel=1e-9)
    assert [r.loss_train for r in graphed] == pytest.approx([r.loss_train for r in eager], rel=1e-9)
