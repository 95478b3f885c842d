import json
from dataclasses import replace

import pytest
import torch

from powersweep.proxy_models import micro_batching
from powersweep.proxy_models.budgets import trunk_tokens
from powersweep.proxy_models.data import DataConfig
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig
from powersweep.sweeps.execute import (
    MAX_TRIALS,
    ExecutionSettings,
    execute,
    job_cost,
    longest_first,
    missing_budgets,
    missing_rows,
    run_job,
    trial_groups,
)
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.spec import RunSpec, SpecError
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.trials import PackedJob

STEP = 4 * 32


def job(lr: float, budgets=(STEP * 8, STEP * 16), seed: int = 0) -> LineageJob:
    config = TrainConfig(
        model="cpu-xs",
        model_overrides={"seq_len": 32, "n_layers": 1},
        batch_size=4,
        tokens=max(budgets),
        schedule=ScheduleConfig(name="wsd", lr=lr, warmup_tokens=STEP),
        data=DataConfig(eval_tokens=1024),
        seed=seed,
    )
    lineage_id = f"lr{lr:g}" + (f"-seed{seed}" if seed else "")
    trunk = tuple(trunk_tokens(config, budgets))
    return LineageJob(
        lineage_id,
        config,
        tuple(budgets),
        tuple(f"{lineage_id}-{t}" for t in budgets),
        trunk,
        tuple(f"{lineage_id}-trunk-{t}" for t in trunk),
    )


def test_missing_budgets_keeps_only_unstored_runs():
    j = job(1e-2, budgets=(STEP * 4, STEP * 8, STEP * 16))
    assert missing_budgets(j, set()) == j
    assert missing_budgets(j, set(j.row_ids)) is None
    partial = missing_budgets(j, {j.run_ids[2], j.trunk_run_ids[2]})
    assert partial.budgets == (STEP * 4, STEP * 8) and partial.config.tokens == STEP * 8
    assert partial.run_ids == j.run_ids[:2]
    assert partial.trunk_tokens == j.trunk_tokens[:2]  # the largest fork is not passed any more
    only_last = missing_budgets(j, set(j.run_ids[:2]) | {j.trunk_run_ids[1]})
    assert only_last.trunk_run_ids == (j.trunk_run_ids[0], j.trunk_run_ids[2])  # passed on the way: written


def test_a_lost_trunk_row_keeps_the_budget_forked_there():
    j = job(1e-2, budgets=(STEP * 4, STEP * 8, STEP * 16))
    lost = missing_budgets(j, set(j.row_ids) - {j.trunk_run_ids[1]})
    assert lost.budgets == (STEP * 8,) and lost.trunk_run_ids == (j.trunk_run_ids[1],)
    assert lost.trunk_tokens == (j.trunk_tokens[1],)


def test_complete_members_leave_their_pack():
    a, b = job(1e-2), job(3e-3)
    assert missing_rows(PackedJob((a, b)), set(a.row_ids)) == PackedJob((b,))
    assert missing_rows(PackedJob((a, b)), set(a.row_ids + b.row_ids)) is None
    rest = missing_rows(
        PackedJob((a, b)), {a.run_ids[0], a.trunk_run_ids[0], b.run_ids[1], b.trunk_run_ids[1]}
    )
    assert rest.budgets == (STEP * 8, STEP * 16) and [m.budgets for m in rest.members] == [
        (STEP * 16,),
        (STEP * 8,),
    ]


def test_trials_start_longest_first_and_keep_plan_order_between_equals():
    short, long, pack = job(1e-2), job(3e-3, budgets=(STEP * 8, STEP * 64)), PackedJob((job(1e-3), job(2e-3)))
    equal = job(5e-3)
    assert job_cost(long) > job_cost(pack) > job_cost(short) == job_cost(equal)
    for device in ("cpu", "gpu"):
        assert longest_first([short, equal, long, pack], device=device) == [long, pack, short, equal]


def test_of_two_jobs_with_the_same_flops_the_one_with_more_steps_starts_first():
    small_batch = job(1e-3)
    big_batch = replace(small_batch, lineage_id="big", config=replace(small_batch.config, batch_size=8))
    assert big_batch.config.steps == small_batch.config.steps // 2
    assert job_cost(small_batch) > job_cost(big_batch)
    assert longest_first([big_batch, small_batch]) == [small_batch, big_batch]


def test_trial_groups_keep_the_order_and_stay_under_max_trials():
    many = [job(1e-3 * (i + 1)) for i in range(2 * MAX_TRIALS + 1)]
    groups = trial_groups(many)
    assert len(groups) <= MAX_TRIALS and [j for g in groups for j in g] == many
    assert trial_groups(many[:5], 2) == [tuple(many[:2]), tuple(many[2:4]), (many[4],)]


@pytest.mark.slow
def test_ray_sweep_writes_every_budget_to_the_store(tmp_path, local_ray):
    jobs = [job(3e-3), job(1e-2)]
    settings = ExecutionSettings(
        store_uri=str(tmp_path / "store"), sweep_id="t", checkpoint_root=str(tmp_path / "ckpt")
    )
    assert execute(jobs, settings).failed_trials == 0
    table = ResultStore(settings.store_uri).read(sweep_id="t").table
    assert sorted(table["run_id"]) == sorted(r for j in jobs for r in j.row_ids)  # budgets and trunk rows
    assert set(table["status"]) == {"ok"} and table["loss_eval"].notna().all()
    assert set(table["lineage_id"]) == {"lr0.003", "lr0.01"} and table["git_sha"].notna().all()
    assert {json.loads(e)["compiled"] for e in table["execution"]} == {
        False
    }  # compile 'auto' on a CPU: eager
    stored = set(table["run_id"])
    assert [missing_budgets(j, stored) for j in jobs] == [None, None]


def test_rounds_run_one_after_another_and_an_error_between_them_is_raised_as_it_was(tmp_path, local_ray):
    first, second = job(3e-3), job(1e-2)
    settings = ExecutionSettings(
        store_uri=str(tmp_path / "store"), sweep_id="t", checkpoint_root=str(tmp_path / "ckpt")
    )
    store, asked = ResultStore(settings.store_uri), []

    def next_round():
        asked.append(set(store.read(sweep_id="t").table["run_id"]))  # the rows stored when it is asked
        if len(asked) == 1:
            return [second]
        raise OSError("the store is unreachable")

    with pytest.raises(OSError, match="the store is unreachable"):
        execute([first], settings, next_round=next_round)
    assert asked == [set(first.row_ids), set(first.row_ids) | set(second.row_ids)]  # each after its round


@pytest.mark.parametrize(
    "resources, field",
    [
        ({"gpus_per_trial": 1.0}, "run.gpus_per_trial=1: no node"),
        ({"run": RunSpec(cpus_per_trial=100.0)}, "run.cpus_per_trial=100: no node"),
    ],
)
def test_resources_no_node_has_are_refused_before_any_trial(tmp_path, local_ray, resources, field):
    settings = ExecutionSettings(
        store_uri=str(tmp_path / "store"), sweep_id="t", checkpoint_root=str(tmp_path), **resources
    )
    with pytest.raises(SpecError) as error:
        execute([job(1e-2)], settings)
    assert str(error.value).startswith(field) and "\n" not in str(error.value)
    assert ResultStore(settings.store_uri).read(sweep_id="t").table.empty


def f64(j: LineageJob) -> LineageJob:
    return replace(j, config=replace(j.config, dtype="float64"))


def local_settings(root) -> ExecutionSettings:
    return ExecutionSettings(store_uri=str(root / "store"), sweep_id="t", checkpoint_root=str(root / "ckpt"))


@pytest.mark.parametrize("persistent", [False, True])
def test_out_of_memory_in_a_packed_trial_loses_no_row(tmp_path, monkeypatch, persistent):
    """An injected CUDA out-of-memory error at step 5 halves the pack's micro-batch; one that persists down to
    one sequence splits the pack (3 -> 1 + 2 -> 1 + 1 + 1). Either way every planned row is stored once, with
    the losses of solo runs (float64), and its execution record says what happened. The pack holds two
    seeds."""
    jobs = [f64(job(lr, seed=seed)) for lr, seed in ((1e-3, 0), (3e-3, 1), (1e-2, 0))]
    for j in jobs:
        run_job(j, local_settings(tmp_path / "solo"))
    real = micro_batching._accumulate

    def accumulate(loop, x, y):  # a packed step's gradients: at the whole batch, or (persistent) any size
        if loop.engine.packed and loop.step == 5 and (persistent or loop.micro_batch_size == 4):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(loop, x, y)

    monkeypatch.setattr(micro_batching, "_accumulate", accumulate)
    run_job(PackedJob(tuple(jobs)), local_settings(tmp_path / "packed"))
    solo = ResultStore(str(tmp_path / "solo" / "store")).read(sweep_id="t").table.set_index("run_id")
    read = ResultStore(str(tmp_path / "packed" / "store")).read(sweep_id="t")
    packed = read.table.set_index("run_id")
    assert read.duplicates_dropped == 0 and sorted(packed.index) == sorted(r for j in jobs for r in j.row_ids)
    assert packed["loss_eval"].to_dict() == pytest.approx(solo.loss_eval[packed.index].to_dict(), rel=1e-7)
    records = [json.loads(e) for e in packed["execution"]]
    if persistent:
        assert {(r["pack"], r["pack_split"]) for r in records} == {(1, 1), (1, 2)}
    else:
        assert {(r["pack"], r["micro_batch_size"], r["out_of_memory_shrinks"]) for r in records} == {
            (3, 2, 1)
        }


def test_on_a_gpu_of_known_size_each_trial_asks_for_its_estimates_share_and_plans_within_it(tmp_path):
    from powersweep.sweeps.execute import _resources, _within_gpu_share, trial_gpus
    from powersweep.sweeps.trials import gpu_share, trial_budget_gib

    gpu_bytes = 2 * 2**30  # a fake 2 GiB GPU: the tiny jobs' estimates are a small share of it
    settings = replace(local_settings(tmp_path), gpu_memory_bytes=gpu_bytes)
    pack, single = PackedJob((job(1e-3), job(3e-3))), job(1e-2)
    share = gpu_share(pack, gpu_bytes=gpu_bytes)[0]
    assert 0 < gpu_share(single, gpu_bytes=gpu_bytes)[0] <= share < 1
    assert trial_gpus([single, pack], settings) == share  # a trial of several jobs asks for the largest share
    [bundle] = _resources(settings)({"jobs": (pack,)}).bundles
    assert bundle == {"CPU": 1.0, "GPU": share}
    within = _within_gpu_share(pack, settings)
    assert {m.config.memory_budget_gib for m in within.members} == {
        trial_budget_gib(pack, share, gpu_bytes=gpu_bytes)
    }
    assert [m.lineage_id for m in within.members] == [m.lineage_id for m in pack.members]
    assert trial_gpus([pack], replace(settings, gpus_per_trial=0.5)) == max(0.5, share)
    assert _within_gpu_share(pack, local_settings(tmp_path)) == pack  # no GPU size known: as planned
