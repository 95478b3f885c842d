"""Adaptive rounds: the search state from the store, a driver killed mid-round, status, and analysis."""

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from test_crash import cli, kill_session, reap_session
from test_sweep import TINY

from powersweep.analysis import analyze
from powersweep.sweeps.execute import ExecutionSettings
from powersweep.sweeps.plan import format_plan, plan
from powersweep.sweeps.progress import ExecutionReport
from powersweep.sweeps.rounds import adaptive_status, run_rounds, search_state, stored_results
from powersweep.sweeps.spec import SpecError, spec_from_dict
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.trials import PackedJob

ADAPTIVE = {
    **TINY,
    "name": "adaptive",
    "search": {
        "mode": "adaptive",
        "models": ["cpu-xs"],
        "batch_size": [4],
        "tokens": [4096, 8192, 16384],
        "adaptive": {"lr_range": [0.002, 0.032], "spacing": 4, "resolution": 2, "max_lineages": 8},
    },
}


def lr_opt(tokens: float) -> float:
    return 0.02 * (tokens / 4096) ** -0.5


def fake_loss(lr: float, tokens: float) -> float:
    """An asymmetric bowl in ln lr whose optimum falls with tokens; lrs 3x above it diverge."""
    x = math.log(lr / lr_opt(tokens))
    return math.inf if x > math.log(3) else 3 + (0.1 if x > 0 else 0.05) * x * x + 0.001 * math.sin(1e4 * lr)


class Killed(Exception):
    """Stands for the driver dying."""


def fake_execute(kill_after: int | None = None):
    """An `execute` that stores each job's missing budget rows from `fake_loss`, one by one; with
    `kill_after`, the driver dies once that many rows have been stored over the calls (the event the kill
    waits on)."""
    stored = [0]

    def run(jobs, settings: ExecutionSettings, *, next_round) -> ExecutionReport:
        store = ResultStore(settings.store_uri)
        while jobs:
            done = set(store.read(sweep_id=settings.sweep_id).table["run_id"])
            for job in jobs:
                for member in job.members if isinstance(job, PackedJob) else (job,):
                    for tokens, run_id in zip(member.budgets, member.run_ids):
                        # an extended lineage passes its stored budgets without writing them again
                        if run_id in done:
                            continue
                        if kill_after is not None and stored[0] >= kill_after:
                            raise Killed
                        store.write(
                            [row(member, tokens, run_id, settings.sweep_id)],
                            sweep_id=settings.sweep_id,
                            name=run_id,
                        )
                        stored[0] += 1
            jobs = next_round()
        return ExecutionReport(0, stored[0], 1.0, 2, 0.5, 0.1, 0.8)

    return run


def row(job, tokens, run_id, sweep_id) -> dict:
    config, loss = job.config, fake_loss(job.config.schedule.lr, tokens)
    return {
        "sweep_id": sweep_id,
        "run_id": run_id,
        "lineage_id": job.lineage_id,
        "schedule": "wsd",
        "model": config.model,
        "lr": config.schedule.lr,
        "batch_size": config.batch_size,
        "seq_len": 32,
        "tokens": int(tokens),
        "seed": config.seed,
        "phase": "final",
        "n_params": 1000,
        "status": "ok" if math.isfinite(loss) else "diverged",
        "loss_eval": loss if math.isfinite(loss) else None,
    }


def settings_for(tmp_path, name: str) -> ExecutionSettings:
    return ExecutionSettings(
        store_uri=str(tmp_path / name), sweep_id="adaptive", checkpoint_root=str(tmp_path)
    )


def stored_ids(settings: ExecutionSettings) -> list[str]:
    return sorted(ResultStore(settings.store_uri).read(sweep_id="adaptive").table["run_id"])


def test_plan_shows_the_first_round_and_the_bound():
    p = plan(spec_from_dict(ADAPTIVE))
    assert len(p.mode.searches) == 1 and sorted(j.config.schedule.lr for j in p.jobs) == [0.002, 0.008, 0.032]
    assert all(j.budgets == (4096,) for j in p.jobs)  # round 1 reaches the smallest budget only
    (smallest, first), full = p.mode.searches[0].lineage_tokens[0], p.mode.searches[0].lineage_tokens[-1][1]
    assert smallest == 4096 and first < full / 4
    assert p.summary()["tokens_bound"] == 8 * full and p.summary()["tokens_planned"] == 3 * first
    assert "adaptive: round 1 is 3 runs in 3 lineages" in format_plan(p)


def test_side_points_reaches_the_policy_and_is_checked():
    spec = {
        **ADAPTIVE,
        "search": {**ADAPTIVE["search"], "adaptive": {**ADAPTIVE["search"]["adaptive"], "side_points": 2}},
    }
    assert plan(spec_from_dict(spec)).mode.searches[0].policy.side_points == 2
    assert plan(spec_from_dict(ADAPTIVE)).mode.searches[0].policy.side_points == 3  # the analysis' half_width
    spec["search"]["adaptive"]["side_points"] = 0
    with pytest.raises(SpecError, match="side_points"):
        spec_from_dict(spec)


# four groups (batch sizes 4 and 8, seeds 0 and 1), each searching on its own rows
GROUPS = {**ADAPTIVE, "search": {**ADAPTIVE["search"], "batch_size": [4, 8], "seeds": [0, 1]}}


@pytest.mark.parametrize("spec", [ADAPTIVE, GROUPS], ids=["one group", "four groups"])
def test_a_driver_killed_at_any_row_resumes_to_the_same_final_runs(tmp_path, spec):
    searches = plan(spec_from_dict(spec)).mode.searches
    reference = settings_for(tmp_path, "reference")
    done = run_rounds(searches, reference, run=fake_execute())
    assert done.rounds_run >= 3 and done.failed_trials == 0
    expected = stored_ids(reference)
    for kill_after in range(1, len(expected), 3):
        settings = settings_for(tmp_path, f"killed-{kill_after}")
        with pytest.raises(Killed):
            run_rounds(searches, settings, run=fake_execute(kill_after))
        assert len(stored_ids(settings)) == kill_after
        run_rounds(searches, settings, run=fake_execute())
        assert stored_ids(settings) == expected


def test_status_shows_rounds_and_brackets(tmp_path, capsys):
    from powersweep.cli import main
    from powersweep.sweeps.sweep import spec_path

    spec = spec_from_dict(ADAPTIVE)
    searches = plan(spec).mode.searches
    settings = settings_for(tmp_path, "store")
    run_rounds(searches, settings, run=fake_execute())
    store = ResultStore(settings.store_uri)
    store.write_json(spec_path("adaptive"), spec.to_dict())
    table = store.read(sweep_id="adaptive").table
    assert main(["status", settings.store_uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"sweep adaptive: {len(table)}/{len(table)} runs done")
    assert any(
        line.startswith("adaptive cpu-xs batch 4 seed 0: ") and line.endswith("(bracketed)") for line in lines
    )
    assert sum("bracketed" in line and "best lr" in line for line in lines) == 3  # one per budget
    status = adaptive_status(searches, table)
    (group,) = status["groups"]
    assert group["state"] == "bracketed" and group["rounds_done"] >= 3 and not group["pending_lrs"]
    assert status["run_ids"] == set(table["run_id"])
    for bracket in group["brackets"]:
        assert bracket["bracketed"] and bracket["lr_below"] < lr_opt(bracket["tokens"]) * 2
        assert bracket["lr_below"] < bracket["lr_best"] and (bracket["above_diverged"] or bracket["lr_above"])


def test_grid_and_adaptive_rows_analyse_alike(tmp_path):
    """The adaptive rows are a subset of the grid's on the same lattice: the same lr_opt per cell."""
    spec = spec_from_dict(ADAPTIVE)
    searches = plan(spec).mode.searches
    settings = settings_for(tmp_path, "store")
    run_rounds(searches, settings, run=fake_execute())
    adaptive = ResultStore(settings.store_uri).read(sweep_id="adaptive").table
    lrs = sorted(set(adaptive["lr"]))
    grid_spec = spec_from_dict(
        {
            **ADAPTIVE,
            "search": {
                **{k: v for k, v in ADAPTIVE["search"].items() if k not in ("mode", "adaptive")},
                "lr": [0.002 * 2**k for k in range(-3, 8)],
            },
        }
    )
    grid_rows = [row(j, t, r, "grid") for j in plan(grid_spec).jobs for t, r in zip(j.budgets, j.run_ids)]
    grid = pd.DataFrame(grid_rows)
    assert set(lrs) < set(grid["lr"])
    cells = {
        name: analyze(table, n_boot=0, seed=0).cells.set_index("tokens")
        for name, table in (("grid", grid), ("adaptive", adaptive.drop(columns=["created_at"])))
    }
    for tokens in ADAPTIVE["search"]["tokens"]:
        g, a = cells["grid"].loc[tokens], cells["adaptive"].loc[tokens]
        assert a["lr_opt_grid"] == g["lr_opt_grid"] and a["ok"]
        assert a["lr_opt"] == pytest.approx(g["lr_opt"], rel=1e-9)  # the same window: the same estimate


LONG = {**ADAPTIVE, "run": {"checkpoint_every_steps": 20}}  # lineages of 32-128 steps: a kill lands mid-round


@pytest.mark.slow
def test_driver_killed_in_a_later_round_resumes_to_the_runs_of_an_uninterrupted_sweep(tmp_path, local_ray):
    from powersweep.sweeps.sweep import submit

    spec = spec_from_dict(LONG)
    reference = submit(spec, storage=str(tmp_path / "reference"))
    assert reference.failed_trials == 0
    again = submit(spec, storage=str(tmp_path / "reference"))  # every search ended: nothing to train
    assert again.lineages_run == 0 and again.execution is None
    expected = ResultStore(str(tmp_path / "reference")).read(sweep_id="adaptive").table
    first_round = {r for j in plan(spec).jobs for r in j.run_ids}
    assert set(expected["run_id"]) > first_round | set(expected.query("phase == 'trunk'")["run_id"])
    rounds_of = trial_processes(tmp_path / "reference" / "checkpoints" / "ray" / "adaptive")
    assert len(set().union(*rounds_of.values())) >= 3  # the search took 3 rounds or more
    assert any(len(rounds) > 1 for rounds in rounds_of.values()), rounds_of  # a process served two rounds

    spec_file, storage = tmp_path / "adaptive.yaml", tmp_path / "store"
    spec_file.write_text(yaml.safe_dump(LONG))
    driver = cli("submit", str(spec_file), "--storage", str(storage))
    try:  # the event: the first budget row of a later round is stored
        while not later_rows(storage, first_round) and driver.poll() is None:
            time.sleep(0.2)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    finally:
        kill_session(driver.pid)
        driver.wait()
    before = ResultStore(str(storage)).read(sweep_id="adaptive").table
    searches = plan(spec).mode.searches
    state = search_state(searches[0], stored_results(before))
    assert state.rounds and state.pending, "the kill should land inside a round after the first"
    resumed = cli("resume", str(storage))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:]
    reap_session(resumed.pid, wait_s=10)
    after = ResultStore(str(storage)).read(sweep_id="adaptive")
    assert sorted(after.table["run_id"]) == sorted(expected["run_id"]) and after.duplicates_dropped == 0
    losses = after.table.set_index("run_id")["loss_eval"]
    assert np.allclose(losses[expected["run_id"]], expected["loss_eval"], equal_nan=True)
    created = after.table.set_index("run_id")["created_at"]
    assert all(created[r] == t for r, t in zip(before["run_id"], before["created_at"]))  # not recomputed


def trial_processes(experiment) -> dict[int, set[int]]:
    """The rounds each trial process ran trials of, from Tune's trial folders: the round in each trial's
    params.json, the process in its reports (result.json)."""
    rounds_of = {}
    for trial in experiment.iterdir():
        if trial.is_dir():
            round_number = json.loads((trial / "params.json").read_text())["round"]
            for line in (trial / "result.json").read_text().splitlines():
                rounds_of.setdefault(json.loads(line)["worker_pid"], set()).add(round_number)
    return rounds_of


def later_rows(storage, first_round: set[str]) -> bool:
    """Whether a budget row outside the first round is stored."""
    if not (storage / "results" / "sweep_id=adaptive").is_dir():
        return False
    table = ResultStore(str(storage)).read(sweep_id="adaptive").table
    return bool((~table["run_id"].isin(first_round) & table["phase"].eq("final")).any())
