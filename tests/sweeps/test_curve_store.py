"""A trial's curves in the store: every point of a lineage once, after a kill and retry too."""

import pandas as pd
import pytest
from test_execute import STEP, job

from powersweep.proxy_models.curve_recorder import CurveGrid
from powersweep.proxy_models.lineage import plan_branches
from powersweep.sweeps.execute import ExecutionSettings, run_job
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.spec import RunSpec
from powersweep.sweeps.store import LineageCurve, ResultStore
from powersweep.sweeps.trials import PackedJob

KEY = ["segment", "budget", "kind", "step"]


def expected_keys(j: LineageJob) -> set[tuple]:
    """The points a lineage keeps: the trunk's grid and forks, each budget's decay grid from its fork, and an
    evaluation at every fork and every budget's end."""
    grid, branches = CurveGrid(), plan_branches(j.config, j.budgets)
    forks = {b.fork_step for b in branches}
    trunk_steps = set(grid.offsets(max(forks))) | forks
    keys = {("trunk", -1.0, "train", s) for s in trunk_steps} | {("trunk", -1.0, "eval", s) for s in forks}
    for b in branches:
        keys |= {
            ("decay", float(b.tokens), "train", b.fork_step + o) for o in grid.offsets(b.steps - b.fork_step)
        }
        keys.add(("decay", float(b.tokens), "eval", b.steps))
    return keys


def stored_curve(settings: ExecutionSettings, lineage_id: str) -> pd.DataFrame:
    table = ResultStore(settings.store_uri).read_curves(sweep_id=settings.sweep_id).table
    table = table[table["lineage_id"].eq(lineage_id)].assign(budget=lambda t: t["budget"].fillna(-1.0))
    return table.set_index(KEY).sort_index()


def settings_for(tmp_path, name: str, **kwargs) -> ExecutionSettings:
    return ExecutionSettings(
        store_uri=str(tmp_path / name),
        sweep_id="t",
        checkpoint_root=str(tmp_path / f"{name}-ck"),
        run=RunSpec(**kwargs),
    )


BUDGETS = (STEP * 8, STEP * 16, STEP * 40)


def test_a_trial_stores_every_point_of_its_lineage_once_with_the_rows_ids(tmp_path):
    j = job(1e-2, budgets=BUDGETS)
    settings = settings_for(tmp_path, "s")
    run_job(j, settings)
    curve = stored_curve(settings, j.lineage_id)
    assert set(curve.index) == expected_keys(j) and curve.index.is_unique
    decay = curve.xs("decay", level="segment")
    assert set(decay["run_id"]) == set(j.run_ids)  # each decay point names its budget's row
    trunk_evals = curve.xs(("trunk", "eval"), level=["segment", "kind"])
    assert sorted(trunk_evals["run_id"]) == sorted(j.trunk_run_ids)
    rows = ResultStore(settings.store_uri).read(sweep_id="t").table.set_index("run_id")
    evals = curve[curve.index.get_level_values("kind") == "eval"]
    assert list(evals["loss_eval"]) == pytest.approx(list(rows.loc[evals["run_id"], "loss_eval"]), rel=1e-12)


def test_a_trial_killed_mid_write_and_retried_stores_every_point_once(tmp_path, monkeypatch):
    j = job(1e-2, budgets=BUDGETS)
    uninterrupted = settings_for(tmp_path, "u")
    run_job(j, uninterrupted)
    settings = settings_for(tmp_path, "k", checkpoint_every_steps=5)
    real, calls = LineageCurve.write, []

    def killed_on_the_fourth_write(self, rows):
        calls.append(len(rows))
        if len(calls) == 4:
            real(self, rows[: len(rows) // 2])  # as if the process died while storing
            raise KeyboardInterrupt("killed")
        return real(self, rows)

    monkeypatch.setattr(LineageCurve, "write", killed_on_the_fourth_write)
    with pytest.raises(KeyboardInterrupt):
        run_job(j, settings)
    monkeypatch.undo()
    run_job(j, settings)  # the retry: resumes from the lineage's checkpoint
    got, want = stored_curve(settings, j.lineage_id), stored_curve(uninterrupted, j.lineage_id)
    assert list(got.index) == list(want.index) and got.index.is_unique
    numbers = ["lr", "loss_train", "loss_train_mean", "loss_eval", "tokens"]
    assert got[numbers].to_numpy() == pytest.approx(want[numbers].to_numpy(), rel=1e-12, nan_ok=True)


def test_each_packed_member_stores_its_own_lineages_curve(tmp_path):
    members = (job(3e-3, budgets=BUDGETS), job(1e-2, budgets=BUDGETS))
    packed = settings_for(tmp_path, "p")
    run_job(PackedJob(members), packed)
    for m in members:
        solo = settings_for(tmp_path, f"solo-{m.lineage_id}")
        run_job(m, solo)
        got, want = stored_curve(packed, m.lineage_id), stored_curve(solo, m.lineage_id)
        assert list(got.index) == list(want.index)
        # values: tests/proxy_models/test_curves.py (float64)
        assert list(got["run_id"]) == list(want["run_id"])


def test_a_member_resumed_with_fewer_budgets_stores_only_its_points(tmp_path):
    j = job(1e-2, budgets=BUDGETS)
    settings = settings_for(tmp_path, "s")
    run_job(job(1e-2, budgets=BUDGETS[:1]), settings)  # the same lineage, asked for its smallest budget first
    before = stored_curve(settings, j.lineage_id)
    run_job(j, settings)
    after = stored_curve(settings, j.lineage_id)
    assert set(before.index) <= set(after.index) == expected_keys(j)


def test_curves_off_stores_none(tmp_path):
    settings = settings_for(tmp_path, "s", curves=False)
    run_job(job(1e-2), settings)
    assert ResultStore(settings.store_uri).curve_names(sweep_id="t") == set()


def merged_by_pandas(old: list[dict], new: list[dict]) -> list[tuple]:
    """The merge as specified: the newest copy of each point by (lineage, segment, budget, kind, step), sorted
    by segment (trunk first), budget, step and kind (train first)."""
    frame = pd.DataFrame(old + new)
    frame["budget"] = frame["budget"].fillna(-1.0)
    frame = frame[~frame.duplicated(["lineage_id", "segment", "budget", "kind", "step"], keep="last")]
    frame = frame.assign(decay=frame["segment"].ne("trunk"), evaluated=frame["kind"].eq("eval"))
    frame = frame.sort_values(["decay", "budget", "step", "evaluated"], kind="stable")
    return list(zip(frame["segment"], frame["budget"], frame["kind"], frame["step"], frame["loss_train"]))


@pytest.mark.parametrize("seed", range(20))
def test_merging_points_keeps_the_newest_copy_of_each_in_curve_order(seed):
    import numpy as np

    from powersweep.sweeps.curve_store import merge_points

    rng = np.random.default_rng(seed)

    def points(count: int, loss: float) -> list[dict]:
        decay = rng.random(count) < 0.5
        budgets = rng.choice([512.0, 1024.0], count)
        return [
            {
                "lineage_id": "lin",
                "segment": "decay" if d else "trunk",
                "budget": float(b) if d else None,
                "kind": rng.choice(["train", "eval"]),
                "step": int(rng.integers(0, 12)),
                "tokens": 0,
                "loss_train": loss + i,
            }
            for i, (d, b) in enumerate(zip(decay, budgets))
        ]

    old, new = points(30, 0.0), points(20, 100.0)  # steps 0-11: many keys repeat, within and across
    stored = merge_points(merge_points(None, old), new).to_pandas()
    got = list(
        zip(
            stored["segment"],
            stored["budget"].fillna(-1.0),
            stored["kind"],
            stored["step"],
            stored["loss_train"],
        )
    )
    assert got == merged_by_pandas(old, new)
